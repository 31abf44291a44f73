//! `synergai-intake`: the front door (until SIGTERM/Ctrl-C).

use std::process::ExitCode;

use synergai_intake::{Intake, IntakeConfig};
use synergai_platform::{config, ops, shutdown, telemetry};

#[global_allocator]
static ALLOCATOR: synergai_platform::Allocator = synergai_platform::Allocator {};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synergai-intake: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let file = config::file_from_env(&env);
    let cfg: IntakeConfig = config::load(&IntakeConfig::default(), file.as_deref(), env)?;
    let _telemetry = telemetry::init("synergai-intake", &cfg.telemetry)?;
    let metrics = ops::install_prometheus().map_err(anyhow::Error::msg)?;
    let intake = Intake::start(cfg, Some(metrics), shutdown::on_signals()).await?;
    intake.run_until_stopped().await;
    Ok(())
}
