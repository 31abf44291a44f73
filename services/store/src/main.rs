//! `synergai-store`: the profiling store service.
//!
//! ```text
//! synergai-store            # serve (migrates first)
//! synergai-store migrate    # apply migrations and exit
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use synergai_platform::{config, ops, shutdown, telemetry};
use synergai_store::config::StoreConfig;
use synergai_store::{Application, app};

#[global_allocator]
static ALLOCATOR: synergai_platform::Allocator = synergai_platform::Allocator {};

#[derive(Parser)]
#[command(name = "synergai-store", version, about = "SynergAI profiling store")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve requests and ingest events (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synergai-store: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let file = config::file_from_env(&env);
    let cfg: StoreConfig = config::load(&StoreConfig::default(), file.as_deref(), env)?;
    let _telemetry = telemetry::init("synergai-store", &cfg.telemetry)?;
    let cancel = shutdown::on_signals();
    let pool = app::pool(&cfg)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            app::migrate(&pool, &cancel).await?;
            tracing::info!("migrations applied");
        }
        Command::Serve => {
            let metrics = ops::install_prometheus().map_err(anyhow::Error::msg)?;
            let app = Application::build(cfg, pool, Some(metrics), cancel).await?;
            app.run_until_stopped().await;
        }
    }
    Ok(())
}
