//! `synergai-loadgen`: open-loop load against a running SynergAI deployment, with per-request
//! latency targets; reports QoS violations, compares policies, and runs the simulator.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use synergai_contract::catalog::Catalog;
use synergai_contract::store::ProfileTable;
use synergai_loadgen::compare::{self, CompareSpec};
use synergai_loadgen::live::{self, Progress, SendOptions, Target};
use synergai_loadgen::{cluster, output};
use synergai_platform::nats::NatsConfig;
use synergai_workload::report::RunInfo;
use synergai_workload::{
    Arrivals, Mix, Planned, Process, RateSchedule, Report, SloSpec, Workload, trace,
};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: synergai_platform::Allocator = synergai_platform::Allocator {};

#[derive(Parser)]
#[command(name = "synergai-loadgen", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a workload to the running system and report QoS violations.
    Run(RunArgs),
    /// Run the same seeded workload against several policies at several loads.
    Compare(CompareArgs),
    /// Write the planned request sequence of a workload as a trace file.
    Trace(TraceArgs),
    /// Simulate a topology with the policy library, on the same workloads.
    Simulate(SimulateArgs),
    /// Save the store's profile table as JSON (for `simulate` and `trace`).
    Profiles(ProfilesArgs),
    /// Compare a live and a simulated comparison: violation rate and p99 gaps.
    Gap(GapArgs),
    /// Print (and rewrite `comparison.txt` beside) the table of a `comparison.json`.
    Table(TableArgs),
}

/// Where the deployment's NATS is.
#[derive(Args, Clone)]
struct NatsArgs {
    /// NATS server.
    #[arg(
        long,
        env = "SYNERGAI_NATS__URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// Subject prefix of the deployment (empty in production).
    #[arg(long, env = "SYNERGAI_NATS__SUBJECT_PREFIX", default_value = "")]
    prefix: String,
    /// NATS user (with a password from SYNERGAI_NATS__PASSWORD or --nats-password-file).
    #[arg(long, env = "SYNERGAI_NATS__USER")]
    nats_user: Option<String>,
    /// NATS password (prefer the environment variable: a flag shows in the process list).
    #[arg(long, env = "SYNERGAI_NATS__PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// File holding the NATS password.
    #[arg(long, env = "SYNERGAI_NATS__PASSWORD_FILE")]
    nats_password_file: Option<PathBuf>,
    /// NATS JWT credentials file (`.creds`).
    #[arg(long, env = "SYNERGAI_NATS__CREDS_FILE")]
    nats_creds: Option<PathBuf>,
    /// Require TLS to NATS (implied by a tls:// URL).
    #[arg(long, env = "SYNERGAI_NATS__TLS_REQUIRED")]
    nats_tls: bool,
    /// CA file for the NATS server's certificate.
    #[arg(long, env = "SYNERGAI_NATS__TLS_CA_FILE")]
    nats_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS with NATS (with --nats-key).
    #[arg(long, env = "SYNERGAI_NATS__TLS_CERT_FILE")]
    nats_cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, env = "SYNERGAI_NATS__TLS_KEY_FILE")]
    nats_key: Option<PathBuf>,
}

impl NatsArgs {
    async fn connect(&self) -> anyhow::Result<(async_nats::Client, synergai_contract::Subjects)> {
        let cfg = NatsConfig {
            url: self.nats.clone(),
            subject_prefix: self.prefix.clone(),
            user: self.nats_user.clone(),
            password: self
                .nats_password
                .clone()
                .map(synergai_platform::secret::Secret::new),
            password_file: self.nats_password_file.clone(),
            creds_file: self.nats_creds.clone(),
            tls_required: self.nats_tls,
            tls_ca_file: self.nats_ca.clone(),
            tls_cert_file: self.nats_cert.clone(),
            tls_key_file: self.nats_key.clone(),
            ..NatsConfig::default()
        };
        let nats = synergai_platform::nats::connect(&cfg, "synergai-loadgen").await?;
        Ok((nats, cfg.subjects()))
    }
}

#[derive(Args, Clone)]
struct Connection {
    #[command(flatten)]
    bus: NatsArgs,
    /// Send over HTTP to this intake (e.g. http://127.0.0.1:8080) instead of NATS.
    #[arg(long)]
    http: Option<String>,
    /// Send tensors as JSON instead of the binary form.
    #[arg(long)]
    json: bool,
    /// Seconds to wait for an answer before counting a request lost.
    #[arg(long, default_value_t = 60.0)]
    timeout_s: f64,
    /// Model catalogue (from scripts/setup).
    #[arg(long, env = "SYNERGAI_CATALOG", default_value = "assets/catalog.json")]
    catalog: PathBuf,
}

#[derive(Args, Clone)]
struct WorkloadArgs {
    /// Arrival process: constant, poisson or gamma.
    #[arg(long, default_value = "poisson")]
    arrivals: String,
    /// Coefficient of variation of the gaps (gamma arrivals; above 1 is bursty).
    #[arg(long)]
    cv: Option<f64>,
    /// Mean rate, requests per second (with --duration).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Length of the run, seconds (with --rate).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Steps and ramps instead of --rate/--duration: `SECS:RATE` or `SECS:FROM..TO`, comma-separated.
    #[arg(long)]
    schedule: Option<String>,
    /// Replay this trace file (`at_ms,model,slo_ms[,samples]` per line) instead of generating.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// Models and weights, e.g. `squeezenet=3,resnet50=1`.
    #[arg(long, default_value = "squeezenet")]
    mix: String,
    /// Latency target of every model: ms (`50ms`) or a multiple of its fastest profile (`x5`).
    #[arg(long, default_value = "x5")]
    slo: String,
    /// Per-model latency targets, e.g. `resnet50=300ms,squeezenet=x4`.
    #[arg(long, default_value = "")]
    slo_model: String,
    /// Samples per request.
    #[arg(long, default_value_t = 1)]
    samples: u32,
    /// Seed of the request sequence (and inputs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl WorkloadArgs {
    fn workload(&self) -> anyhow::Result<Workload> {
        let schedule = match &self.schedule {
            Some(s) => RateSchedule::parse(s)?,
            None => RateSchedule::constant(self.rate, self.duration)?,
        };
        Ok(Workload {
            arrivals: Arrivals {
                process: Process::parse(&self.arrivals, self.cv)?,
                schedule,
            },
            mix: Mix::parse(&self.mix)?,
            default_slo: SloSpec::parse(&self.slo)?,
            slo: Workload::parse_slos(&self.slo_model)?,
            samples: self.samples,
        })
    }

    /// The plan and its length in seconds.
    fn plan(&self, table: Option<&ProfileTable>) -> anyhow::Result<(Vec<Planned>, f64)> {
        if let Some(path) = &self.trace {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let plan = trace::parse(&text)?;
            let secs = plan.last().map_or(0.0, |p| p.at_ms / 1000.0).max(1e-3);
            return Ok((plan, secs));
        }
        let w = self.workload()?;
        let plan = w.plan(self.seed, |m| table.and_then(|t| cluster::fastest_ms(t, m)))?;
        Ok((plan, w.arrivals.schedule.secs()))
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Switch the scheduler to this policy first (else the report names the policy in force).
    #[arg(long)]
    policy: Option<String>,
    /// Where to write report.json, records.csv and latency-cdf.svg.
    #[arg(long, default_value = "loadgen-out")]
    out: PathBuf,
    /// Label of emulated parts of the setup, for the report (repeatable).
    #[arg(long)]
    emulated: Vec<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct CompareArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Policies to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "synergai,slo-mael,mael,round-robin,random,least-loaded,edge-only,cloud-only"
    )]
    policies: Vec<String>,
    /// Loads as fractions of the capacity the profiles predict.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.5,0.7,0.9,1.0,1.3")]
    loads: Vec<f64>,
    /// Capacity to scale loads against, requests per second (else predicted from the profiles
    /// and the live workers).
    #[arg(long)]
    capacity: Option<f64>,
    /// Where to write the comparison and each run's report.
    #[arg(long, default_value = "loadgen-compare")]
    out: PathBuf,
    /// Label of emulated parts of the setup, for the reports (repeatable).
    #[arg(long)]
    emulated: Vec<String>,
}

#[derive(Args)]
struct TraceArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Profile table JSON (the store's `table` reply) for targets given as multiples.
    #[arg(long)]
    profiles: Option<PathBuf>,
    /// Output file.
    #[arg(long, default_value = "trace.csv")]
    out: PathBuf,
}

#[derive(Args)]
struct SimulateArgs {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// Topology (JSON): sites, network, worker groups, ingress.
    #[arg(long)]
    topology: PathBuf,
    /// Profiles (JSON): the store's table (`profiles` subcommand) or a `{"points": [...]}` file.
    #[arg(long)]
    profiles: PathBuf,
    /// Policies to run.
    #[arg(long, value_delimiter = ',', default_value = "synergai,slo-mael")]
    policies: Vec<String>,
    /// Loads as fractions of the predicted capacity (else one run at --rate).
    #[arg(long, value_delimiter = ',')]
    loads: Vec<f64>,
    /// Capacity to scale loads against, requests per second (else predicted from the profiles).
    #[arg(long)]
    capacity: Option<f64>,
    /// Log-standard-deviation of lognormal execution-time noise (0: none).
    #[arg(long, default_value_t = 0.0)]
    noise: f64,
    /// With a stored profile table: configurations observed online at least this many times
    /// run at their online estimate (measured while serving) instead of the offline profile.
    #[arg(long)]
    online_min: Option<i64>,
    /// What a run really takes, where it differs from what the scheduler reads: `offline` (the
    /// offline profiles, while `--online-min` feeds the scheduler online estimates) or a profile
    /// file (e.g. run times while serving, from `scripts/derive-work`). The topology's shared
    /// hosts stretch it.
    #[arg(long)]
    work: Option<String>,
    /// What the scheduler assumes each placement's path costs, instead of the topology's
    /// network: `OVERHEAD_MS,BANDWIDTH_MBPS` (the live scheduler's `network.overhead_ms` and
    /// `network.bandwidth_mbps`).
    #[arg(long, value_delimiter = ',')]
    plan_path: Vec<f64>,
    /// Model catalogue, for input sizes (what crosses the network).
    #[arg(long, env = "SYNERGAI_CATALOG", default_value = "assets/catalog.json")]
    catalog: PathBuf,
    /// Also write each run's per-request CSV.
    #[arg(long)]
    records: bool,
    /// Where to write reports.
    #[arg(long, default_value = "loadgen-sim")]
    out: PathBuf,
}

#[derive(Args)]
struct ProfilesArgs {
    #[command(flatten)]
    bus: NatsArgs,
    /// Output file.
    #[arg(long, default_value = "profiles.json")]
    out: PathBuf,
}

#[derive(Args)]
struct GapArgs {
    /// The live `comparison.json`.
    #[arg(long)]
    live: PathBuf,
    /// The simulated `comparison.json`.
    #[arg(long)]
    sim: PathBuf,
}

#[derive(Args)]
struct TableArgs {
    /// A `comparison.json`.
    comparison: PathBuf,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => run(a).await,
        Command::Compare(a) => compare(a).await,
        Command::Trace(a) => write_trace(a),
        Command::Simulate(a) => simulate(a),
        Command::Profiles(a) => save_profiles(a).await,
        Command::Gap(a) => gap(a),
        Command::Table(a) => table(a),
    }
}

struct Connected {
    nats: async_nats::Client,
    subjects: synergai_contract::Subjects,
    target: Target,
    opts: SendOptions,
    catalog: Catalog,
}

async fn connect(c: &Connection, seed: u64) -> anyhow::Result<Connected> {
    let (nats, subjects) = c.bus.connect().await?;
    let catalog = Catalog::load(&c.catalog)
        .with_context(|| format!("loading the catalogue {}", c.catalog.display()))?;
    let target = match &c.http {
        Some(base) => Target::Http { base: base.clone() },
        None => Target::Nats {
            client: nats.clone(),
            subjects: subjects.clone(),
        },
    };
    if !(c.timeout_s.is_finite() && c.timeout_s > 0.0) {
        bail!("--timeout-s must be positive");
    }
    Ok(Connected {
        nats,
        subjects,
        target,
        opts: SendOptions {
            binary: !c.json,
            timeout: Duration::from_secs_f64(c.timeout_s),
            input_seed: seed,
        },
        catalog,
    })
}

/// Ctrl-C stops the arrivals; what was sent is still awaited and reported.
fn stop_on_ctrl_c() -> CancellationToken {
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: no new requests; waiting for the answers of those sent");
            s.cancel();
        }
    });
    stop
}

fn progress_bar(total: u64, quiet: bool, progress: Arc<Progress>) -> Option<ProgressBar> {
    if quiet {
        return None;
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let b = bar.clone();
    tokio::spawn(async move {
        loop {
            b.set_position(
                progress.answered() + progress.lost.load(std::sync::atomic::Ordering::Relaxed),
            );
            b.set_message(progress.line());
            if b.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    Some(bar)
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let c = connect(&a.conn, a.workload.seed).await?;
    let table = cluster::profiles(&c.nats, &c.subjects).await.ok();
    let (plan, secs) = a.workload.plan(table.as_ref())?;
    let state = cluster::control(&c.nats, &c.subjects, a.policy.as_deref()).await?;
    eprintln!(
        "{} requests over {secs:.1} s ({:.1}/s) to {} workers under {}",
        plan.len(),
        plan.len() as f64 / secs,
        state.workers,
        state.policy
    );
    let progress = Arc::new(Progress::default());
    let bar = progress_bar(plan.len() as u64, a.quiet, progress.clone());
    let records = live::run(
        &plan,
        &c.catalog,
        &c.target,
        &c.opts,
        progress,
        stop_on_ctrl_c(),
    )
    .await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let report = Report::new(
        RunInfo {
            policy: state.policy,
            mode: "live".into(),
            seed: a.workload.seed,
            duration_s: secs,
            load_fraction: None,
            emulated: a.emulated,
        },
        &records,
    );
    output::write_run(&a.out, &report, &records)?;
    println!("{}", report.summary());
    println!("report: {}", a.out.join("report.json").display());
    Ok(())
}

async fn compare(a: CompareArgs) -> anyhow::Result<()> {
    let c = connect(&a.conn, a.workload.seed).await?;
    let table = cluster::profiles(&c.nats, &c.subjects).await?;
    let workload = a.workload.workload()?;
    let capacity_rps = match a.capacity {
        Some(c) => c,
        None => {
            let workers =
                cluster::live_workers(&c.nats, &c.subjects, Duration::from_secs(2)).await?;
            let cap = cluster::capacity_rps(&table, &workers, &workload.mix);
            eprintln!(
                "{} live workers; the profiles predict {cap:.1} requests/s for this mix",
                workers.len()
            );
            cap
        }
    };
    if capacity_rps.is_nan() || capacity_rps <= 0.0 {
        bail!("no capacity: no live worker has a profile for this mix (or pass --capacity)");
    }
    let spec = CompareSpec {
        policies: a.policies,
        loads: a.loads,
        workload,
        seed: a.workload.seed,
        capacity_rps,
        emulated: a.emulated,
    };
    let out = a.out.clone();
    let (comparison, latencies) = compare::live(
        &spec,
        &c.nats,
        &c.subjects,
        &c.catalog,
        &c.target,
        &c.opts,
        |m| cluster::fastest_ms(&table, m),
        stop_on_ctrl_c(),
        |report, records| {
            eprintln!(
                "load {:.0}%: {}",
                report.load_fraction.unwrap_or(0.0) * 100.0,
                report.summary()
            );
            let dir = out.join(format!(
                "load-{:03.0}-{}",
                report.load_fraction.unwrap_or(0.0) * 100.0,
                report.policy
            ));
            if let Err(e) = output::write_run(&dir, report, records) {
                eprintln!("warning: {e:#}");
            }
        },
    )
    .await?;
    comparison.write(&a.out, &latencies)?;
    println!("{}", comparison.table());
    println!("written to {}", a.out.display());
    Ok(())
}

fn write_trace(a: TraceArgs) -> anyhow::Result<()> {
    let table: Option<ProfileTable> = match &a.profiles {
        Some(p) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("{} is not a profile table", p.display()))?,
        ),
        None => None,
    };
    let (plan, secs) = a.workload.plan(table.as_ref())?;
    std::fs::write(&a.out, trace::render(&plan))
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{} requests over {secs:.1} s written to {}",
        plan.len(),
        a.out.display()
    );
    Ok(())
}

fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    use synergai_loadgen::simulate::{self as sim, Profiles};
    let topology = sim::read_topology(&a.topology)?;
    let profiles = Profiles::parse(
        &std::fs::read_to_string(&a.profiles)
            .with_context(|| format!("reading {}", a.profiles.display()))?,
        a.online_min,
    )
    .with_context(|| format!("reading profiles from {}", a.profiles.display()))?;
    let catalog = Catalog::load(&a.catalog).ok();
    if catalog.is_none() {
        eprintln!(
            "warning: no catalogue at {}: inputs cost nothing on the network",
            a.catalog.display()
        );
    }
    let mut base = synergai_sim::SimConfig::new(synergai_sim::PolicyKind::Synergai);
    base.seed = a.workload.seed;
    base.noise_sigma = a.noise;
    base.payload_bytes = sim::payload_bytes(catalog.as_ref());
    base.planning_path = match a.plan_path[..] {
        [] => None,
        [overhead, bandwidth] => Some((overhead, bandwidth)),
        _ => anyhow::bail!("--plan-path takes OVERHEAD_MS,BANDWIDTH_MBPS"),
    };
    base.work = match a.work.as_deref() {
        None => None,
        Some("offline") => Some(profiles.offline.clone()),
        Some(path) => Some(
            Profiles::parse(
                &std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?,
                None,
            )
            .with_context(|| format!("reading run times from {path}"))?
            .points,
        ),
    };
    let workload = a.workload.workload()?;
    let capacity = match a.capacity {
        Some(c) => c,
        None => synergai_sim::capacity_rps(
            &topology,
            &profiles.points,
            &workload.mix,
            workload.samples,
        )?,
    };
    eprintln!(
        "{} workers; the profiles predict {capacity:.1} requests/s for this mix",
        topology.worker_count()
    );
    let out = a.out.clone();
    let records = a.records;
    let report_run = |run: &sim::SimRun| {
        let r = &run.report;
        let n = r.sent as f64;
        eprintln!(
            "{}{}\n  simulated {} requests ({} events) in {:.2} s: {:.0} requests/s",
            r.load_fraction
                .map(|l| format!("load {:.0}%: ", l * 100.0))
                .unwrap_or_default(),
            r.summary(),
            r.sent,
            run.events,
            run.wall_s,
            n / run.wall_s.max(1e-9)
        );
        let dir = match r.load_fraction {
            Some(l) => out.join(format!("load-{:03.0}-{}", l * 100.0, r.policy)),
            None => out.join(&r.policy),
        };
        let written = if records {
            output::write_run(&dir, r, &run.records)
        } else {
            std::fs::create_dir_all(&dir)
                .map_err(anyhow::Error::from)
                .and_then(|()| {
                    Ok(std::fs::write(
                        dir.join("report.json"),
                        serde_json::to_string_pretty(r)?,
                    )?)
                })
        };
        if let Err(e) = written {
            eprintln!("warning: {e:#}");
        }
    };
    if a.loads.is_empty() {
        let (plan, secs) = a.workload.plan(None).or_else(|_| {
            let plan = workload.plan(a.workload.seed, |m| profiles.fastest_ms(m))?;
            Ok::<_, anyhow::Error>((plan, workload.arrivals.schedule.secs()))
        })?;
        for p in &a.policies {
            let run = sim::run_one(
                &topology,
                &profiles,
                &plan,
                p,
                &base,
                a.workload.seed,
                secs,
                None,
            )?;
            report_run(&run);
        }
        return Ok(());
    }
    let (comparison, latencies) = sim::compare(
        &topology,
        &profiles,
        &workload,
        &a.policies,
        &a.loads,
        capacity,
        &base,
        a.workload.seed,
        report_run,
    )?;
    comparison.write(&a.out, &latencies)?;
    println!("{}", comparison.table());
    println!("written to {}", a.out.display());
    Ok(())
}

async fn save_profiles(a: ProfilesArgs) -> anyhow::Result<()> {
    let (nats, subjects) = a.bus.connect().await?;
    let table = cluster::profiles(&nats, &subjects).await?;
    std::fs::write(&a.out, serde_json::to_string_pretty(&table)?)
        .with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{} profiles (revision {}) written to {}",
        table.profiles.len(),
        table.revision,
        a.out.display()
    );
    Ok(())
}

fn read_comparison(p: &PathBuf) -> anyhow::Result<output::Comparison> {
    serde_json::from_str(
        &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
    )
    .with_context(|| format!("{} is not a comparison", p.display()))
}

fn table(a: TableArgs) -> anyhow::Result<()> {
    let c = read_comparison(&a.comparison)?;
    let text = c.table();
    let txt = a.comparison.with_file_name("comparison.txt");
    std::fs::write(&txt, &text).with_context(|| format!("writing {}", txt.display()))?;
    print!("{text}");
    Ok(())
}

fn gap(a: GapArgs) -> anyhow::Result<()> {
    let (live, sim) = (read_comparison(&a.live)?, read_comparison(&a.sim)?);
    print!("{}", output::gap_table(&live, &sim));
    Ok(())
}
