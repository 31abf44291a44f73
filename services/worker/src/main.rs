//! `synergai-worker`: the worker binary.
//!
//! ```text
//! synergai-worker profile --model squeezenet --engine ort --threads 1 --batch 1 --json
//! synergai-worker check        # every model on every engine, batch 1 and the largest batch
//! synergai-worker info         # identity, CPU, cores, engines and versions
//! synergai-worker serve        # the worker service
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use rand::SeedableRng;
use serde_json::json;
use synergai_contract::profile::ProfileLine;
use synergai_contract::store::UpsertProfiles;
use synergai_platform::{config, cpu, nats, ops, shutdown, telemetry};
use synergai_store_client::StoreClient;
use synergai_worker::Worker;
use synergai_worker::config::WorkerConfig;
use synergai_worker::engine::{EngineError, EngineKind};
use synergai_worker::inputs::random_inputs;
use synergai_worker::profile::{self, Plan};
use synergai_worker::serve;

#[global_allocator]
static ALLOCATOR: synergai_platform::Allocator = synergai_platform::Allocator {};

#[derive(Parser)]
#[command(
    name = "synergai-worker",
    version,
    about = "SynergAI worker: inference engines and offline profiling"
)]
struct Cli {
    /// Pin the process to these cores before anything else starts (e.g. "0-1"); overrides
    /// worker.cores.
    #[arg(long, global = true)]
    cores: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure engine × threads × batch for models (the offline phase).
    Profile(ProfileArgs),
    /// Load every model on every engine and run it once at batch 1 and at its largest
    /// profiled batch; report what each engine supports.
    Check {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print this worker's identity, CPU, cores, engines and versions as JSON.
    Info,
    /// Serve: take jobs from the scheduler, answer clients, heartbeat (until SIGTERM/Ctrl-C).
    Serve,
}

#[derive(Args)]
struct ProfileArgs {
    /// Models to profile (repeatable); default: every catalogue model.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Engines (repeatable): ort, tract; default: every enabled engine.
    #[arg(long = "engine")]
    engines: Vec<EngineKind>,
    /// Intra-op thread counts (repeatable); default: 1 to the number of cores allowed.
    #[arg(long = "threads")]
    threads: Vec<usize>,
    /// Batch sizes (repeatable); default: profile.batches, capped by each model's largest batch.
    #[arg(long = "batch")]
    batches: Vec<usize>,
    /// Untimed runs per point.
    #[arg(long)]
    warmup: Option<u32>,
    /// Timed runs per point, at least.
    #[arg(long)]
    min_runs: Option<u32>,
    /// Timed runs per point, at most.
    #[arg(long)]
    max_runs: Option<u32>,
    /// Time per point after the minimum runs, ms.
    #[arg(long)]
    budget_ms: Option<u64>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 2509)]
    seed: u64,
    /// Raw little-endian bytes to feed as the model's single input instead of random data.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Print JSON lines (one per point) on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Also append the JSON lines to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Send the points to the profiling store (over NATS) as they are measured.
    #[arg(long)]
    publish: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("synergai-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let file = config::file_from_env(&env);
    let mut cfg: WorkerConfig = config::load(&WorkerConfig::default(), file.as_deref(), env)?;
    if let Some(cores) = cli.cores {
        cfg.worker.cores = cores;
    }
    // Pin before any thread exists, so every engine thread inherits the core set.
    if !cfg.worker.cores.is_empty() {
        cpu::pin_process(&cpu::parse_core_set(&cfg.worker.cores)?)?;
    }
    let _telemetry = telemetry::init("synergai-worker", &cfg.telemetry)?;
    let worker = Worker::build(&cfg)?;
    match cli.command {
        Command::Profile(args) => profile_cmd(&worker, &cfg, args),
        Command::Check { json } => check_cmd(&worker, json),
        Command::Info => info_cmd(&worker, &cfg),
        Command::Serve => {
            let metrics = ops::install_prometheus().map_err(anyhow::Error::msg)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let cancel = shutdown::on_signals();
                serve::serve(cfg, worker, Some(metrics), cancel).await
            })?;
            Ok(())
        }
    }
}

fn profile_cmd(worker: &Worker, cfg: &WorkerConfig, args: ProfileArgs) -> anyhow::Result<()> {
    let catalog = worker.models.catalog();
    let models = if args.models.is_empty() {
        catalog.models.iter().map(|m| m.name.to_string()).collect()
    } else {
        args.models
    };
    for m in &models {
        catalog.model(m)?;
    }
    let engines = if args.engines.is_empty() {
        worker.engines.iter().map(|e| e.kind()).collect()
    } else {
        args.engines
    };
    let threads = if args.threads.is_empty() {
        (1..=worker.facts.core_set.len()).collect()
    } else {
        args.threads
    };
    if threads.contains(&0) {
        bail!("--threads must be at least 1");
    }
    let batches = if args.batches.is_empty() {
        cfg.profile.batches.iter().map(|&b| b as usize).collect()
    } else {
        args.batches
    };
    if batches.contains(&0) {
        bail!("--batch must be at least 1");
    }
    let input = match &args.input {
        Some(p) => {
            Some(std::fs::read(p).with_context(|| format!("reading --input {}", p.display()))?)
        }
        None => None,
    };
    let plan = Plan {
        models,
        engines,
        threads,
        batches,
        warmup: args.warmup.unwrap_or(cfg.profile.warmup),
        min_runs: args.min_runs.unwrap_or(cfg.profile.min_runs).max(1),
        max_runs: args.max_runs.unwrap_or(cfg.profile.max_runs).max(1),
        budget: Duration::from_millis(args.budget_ms.unwrap_or(cfg.profile.budget_ms)),
        seed: args.seed,
        input,
    };
    let mut out = match &args.out {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening --out {}", p.display()))?,
        ),
        None => None,
    };
    let mut publisher = if args.publish {
        Some(Publisher::connect(cfg)?)
    } else {
        None
    };
    let stdout = std::io::stdout();
    let mut write_err: Option<std::io::Error> = None;
    let mut publish_err: Option<anyhow::Error> = None;
    let lines = profile::run(
        &worker.models,
        &worker.engine_refs(),
        &worker.facts,
        &plan,
        |line| {
            if let Some(p) = publisher.as_mut()
                && publish_err.is_none()
                && let Err(e) = p.add(line)
            {
                publish_err = Some(e);
            }
            let Ok(text) = serde_json::to_string(line) else {
                return;
            };
            if args.json
                && let Err(e) = writeln!(stdout.lock(), "{text}")
            {
                write_err.get_or_insert(e);
            }
            if let Some(f) = out.as_mut()
                && let Err(e) = writeln!(f, "{text}")
            {
                write_err.get_or_insert(e);
            }
        },
    )?;
    if let Some(e) = write_err {
        return Err(e).context("writing profile lines");
    }
    if let Some(p) = publisher.as_mut()
        && publish_err.is_none()
        && let Err(e) = p.flush()
    {
        publish_err = Some(e);
    }
    if !args.json {
        print!("{}", profile::table(&lines));
    }
    if let Some(e) = publish_err {
        return Err(e.context(
            "publishing to the profiling store (the points above were measured but not all stored)",
        ));
    }
    if let Some(p) = publisher {
        tracing::info!(
            points = p.sent,
            inserted = p.inserted,
            replaced = p.replaced,
            ignored = p.ignored,
            "published to the profiling store"
        );
    }
    Ok(())
}

/// Sends profile lines to the store in batches, from the (synchronous) sweep.
struct Publisher {
    runtime: tokio::runtime::Runtime,
    client: StoreClient,
    pending: UpsertProfiles,
    sent: u32,
    inserted: u32,
    replaced: u32,
    ignored: u32,
}

impl Publisher {
    /// Lines sent per store request.
    const BATCH: usize = 32;

    fn connect(cfg: &WorkerConfig) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let nats = runtime.block_on(nats::connect(&cfg.nats, "synergai-worker-profile"))?;
        Ok(Publisher {
            client: StoreClient::new(nats, cfg.nats.subjects())
                .with_timeout(Duration::from_secs(30)),
            runtime,
            pending: UpsertProfiles {
                points: Vec::new(),
                unsupported: Vec::new(),
            },
            sent: 0,
            inserted: 0,
            replaced: 0,
            ignored: 0,
        })
    }

    fn add(&mut self, line: &ProfileLine) -> anyhow::Result<()> {
        match line {
            ProfileLine::Point(p) => self.pending.points.push(p.clone()),
            ProfileLine::Unsupported(u) => self.pending.unsupported.push(u.clone()),
        }
        if self.pending.points.len() + self.pending.unsupported.len() >= Self::BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.pending.points.is_empty() && self.pending.unsupported.is_empty() {
            return Ok(());
        }
        let r = self
            .runtime
            .block_on(self.client.upsert_profiles(&self.pending))?;
        self.sent += (self.pending.points.len() + self.pending.unsupported.len()) as u32;
        self.inserted += r.inserted;
        self.replaced += r.replaced;
        self.ignored += r.ignored;
        self.pending.points.clear();
        self.pending.unsupported.clear();
        Ok(())
    }
}

fn check_cmd(worker: &Worker, json: bool) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut failures = 0;
    for entry in &worker.models.catalog().models {
        let largest = entry.max_batch().map_or(8, |m| m.min(8) as usize);
        for engine in &worker.engines {
            let result = worker
                .models
                .open(engine.as_ref(), entry.name.as_str(), 1)
                .and_then(|mut s| {
                    for batch in [1, largest] {
                        s.run(random_inputs(entry, batch, &mut rng))?;
                    }
                    Ok(())
                });
            let status = match &result {
                Ok(()) => "ok".to_owned(),
                Err(e @ EngineError::Unsupported { .. }) => e.to_string(),
                Err(e) if engine.kind() == EngineKind::Tract => {
                    format!("unsupported by tract: {e}")
                }
                Err(e) => {
                    failures += 1;
                    format!("error: {e}")
                }
            };
            if json {
                println!(
                    "{}",
                    json!({"model": entry.name, "engine": engine.kind(), "batches": [1, largest], "status": status})
                );
            } else {
                println!(
                    "{:<13} {:<6} batch 1,{largest:<3} {status}",
                    entry.name.as_str(),
                    engine.kind().as_str()
                );
            }
        }
    }
    if failures > 0 {
        bail!("{failures} model(s) failed on an engine that must run them");
    }
    Ok(())
}

fn info_cmd(worker: &Worker, cfg: &WorkerConfig) -> anyhow::Result<()> {
    let engines: Vec<_> = worker
        .engines
        .iter()
        .map(|e| json!({"engine": e.kind(), "version": e.engine_version(), "library": e.library_version()}))
        .collect();
    let info = json!({
        "worker": worker.facts.worker,
        "site": cfg.worker.site,
        "tier": cfg.worker.tier,
        "device_class": worker.facts.device_class,
        "arch": worker.facts.arch,
        "cpu_model": worker.facts.cpu_model,
        "core_set": worker.facts.core_set,
        "engines": engines,
        "catalog": cfg.catalog,
        "models": worker.models.catalog().models.len(),
    });
    println!("{}", serde_json::to_string_pretty(&info)?);
    Ok(())
}
