//! `synergai-scheduler`: the scheduler service (until SIGTERM/Ctrl-C).

use std::process::ExitCode;

use synergai_contract::catalog::Catalog;
use synergai_platform::{config, ops, shutdown, telemetry};
use synergai_scheduler::Scheduler;
use synergai_scheduler::config::SchedulerConfig;

#[global_allocator]
static ALLOCATOR: synergai_platform::Allocator = synergai_platform::Allocator {};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synergai-scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let file = config::file_from_env(&env);
    let cfg: SchedulerConfig = config::load(&SchedulerConfig::default(), file.as_deref(), env)?;
    let _telemetry = telemetry::init("synergai-scheduler", &cfg.telemetry)?;
    let catalog = Catalog::load(&cfg.catalog)?;
    let models = catalog.models.iter().map(|m| m.name.to_string()).collect();
    let metrics = ops::install_prometheus().map_err(anyhow::Error::msg)?;
    let cancel = shutdown::on_signals();
    let scheduler = Scheduler::start(cfg, models, Some(metrics), cancel).await?;
    scheduler.run_until_stopped().await;
    Ok(())
}
