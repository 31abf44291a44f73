//! PostgreSQL stopped under a steady telemetry stream, on a PostgreSQL cluster of the test's own
//! (the machine's shared server must keep running for every other test).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::PgPoolOptions;
use synergai_contract::store::{JobObservation, Outcome, ProfileKey, TableRequest, UpsertProfiles};
use synergai_contract::{ErrorCode, Token};
use synergai_store_client::StoreError;

use crate::helpers::{TestApp, config, eventually, point};

/// A throwaway PostgreSQL cluster in a temporary folder, on a free port.
struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
}

fn postgres_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("SYNERGAI_TEST_PG_BIN") {
        return dir.into();
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(out) = out
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL server binaries (initdb, pg_ctl) not found; set SYNERGAI_TEST_PG_BIN")
}

impl TestPostgres {
    fn start_new() -> TestPostgres {
        let dir = tempfile::tempdir().expect("temp dir");
        let as_postgres_user = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if as_postgres_user {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            let ok = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand the cluster folder to the postgres user");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let pg = TestPostgres {
            bin: postgres_bin(),
            dir,
            port,
            as_postgres_user,
        };
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.start();
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let status = if self.as_postgres_user {
            Command::new("runuser")
                .arg("-u")
                .arg("postgres")
                .arg("--")
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .expect("runs");
        assert!(
            status.status.success(),
            "{tool} {args:?} failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }

    fn start(&self) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &opts,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        let data = self.dir.path().join("data");
        self.run(
            "pg_ctl",
            &["-D", &data.to_string_lossy(), "-m", "fast", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let program = self.bin.join("pg_ctl");
        let args = ["-D", &data.to_string_lossy(), "-m", "immediate", "stop"].map(str::to_owned);
        let _ = if self.as_postgres_user {
            Command::new("runuser")
                .arg("-u")
                .arg("postgres")
                .arg("--")
                .arg(&program)
                .args(&args)
                .output()
        } else {
            Command::new(&program).args(&args).output()
        };
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_under_steady_telemetry() -> anyhow::Result<()> {
    let pg = TestPostgres::start_new();
    let mut cfg = config();
    cfg.database.url = pg.url();
    cfg.database.acquire_timeout_ms = 300;
    cfg.ingest.telemetry_capacity = 1_000;
    cfg.ingest.telemetry_batch = 200;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy(&pg.url())?;
    let app = TestApp::spawn_with(pool.clone(), cfg).await;
    app.client
        .upsert_profiles(&UpsertProfiles {
            points: vec![point("x86-2c", "ort", "resnet50", 1, 1, 30.0)],
            unsupported: vec![],
        })
        .await?;

    // A steady stream: 1,500 job observations per second, until told to stop.
    let key = ProfileKey {
        device_class: "x86-2c".into(),
        engine: "ort".into(),
        model: "resnet50".into(),
        threads: 1,
        batch: 1,
    };
    let sent = Arc::new(AtomicU64::new(0));
    let streaming = Arc::new(AtomicBool::new(true));
    let stream = {
        let (events, sent, streaming, key) = (
            app.events.clone(),
            sent.clone(),
            streaming.clone(),
            key.clone(),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while streaming.load(Ordering::Relaxed) {
                tick.tick().await;
                for _ in 0..15 {
                    let o = JobObservation {
                        worker: "w1".into(),
                        key: key.clone(),
                        exec_ms: 30.0,
                        request_ids: vec![],
                    };
                    if events.job(&o).await.is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };
    eventually(Duration::from_secs(10), "telemetry flowing", || async {
        app.client
            .stats()
            .await
            .ok()
            .filter(|s| s.telemetry_written > 500)
    })
    .await;

    // Outage: the store answers 503 and buffers within its bound.
    pg.stop();
    let down_at = Instant::now();
    let site = Token::parse("local")?;
    let mut outcomes_sent = 0;
    let mut saw_503 = false;
    let mut max_pending = 0;
    while down_at.elapsed() < Duration::from_secs(3) {
        match app.client.table(&TableRequest::default()).await {
            Err(StoreError::Remote {
                code: ErrorCode::Unavailable,
                ..
            }) => saw_503 = true,
            other => assert!(
                other.is_err() || down_at.elapsed() < Duration::from_millis(500),
                "table served while PostgreSQL is down: {other:?}"
            ),
        }
        // Outcomes keep arriving too: JetStream holds them for later.
        let batch: Vec<Outcome> = (0..50)
            .map(|i| Outcome {
                request_id: format!("outage-{}", outcomes_sent + i),
                model: "resnet50".into(),
                slo_ms: 50.0,
                arrival: time::OffsetDateTime::now_utc(),
                policy: "synergai".into(),
                site: Some("local".into()),
                worker: Some("w1".into()),
                engine: Some("ort".into()),
                threads: Some(1),
                batch: Some(1),
                code: 200,
                queue_ms: Some(1.0),
                exec_ms: Some(30.0),
                total_ms: 32.0,
                violated: false,
                excess_ms: 0.0,
            })
            .collect();
        app.events.outcomes(&site, &batch).await?;
        outcomes_sent += batch.len() as u64;
        let s = app.client.stats().await?;
        // Waiting events stay within the capacity; one batch more may be being written.
        assert!(
            s.telemetry_pending <= s.telemetry_capacity + 200,
            "buffer beyond its bound: {s:?}"
        );
        max_pending = max_pending.max(s.telemetry_pending);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = app.client.stats().await?;
    assert!(
        saw_503,
        "the store never answered 503 while PostgreSQL was down"
    );
    assert!(!during.database_up);
    assert!(
        during.telemetry_dropped > 0,
        "3 s at 1,500/s must overflow a 1,000-event buffer: {during:?}"
    );

    // Recovery: PostgreSQL returns, the store catches up.
    pg.start();
    let up_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    streaming.store(false, Ordering::Relaxed);
    stream.await?;
    let total_sent = sent.load(Ordering::Relaxed);
    let settled = eventually(Duration::from_secs(20), "the store to catch up", || async {
        app.client.stats().await.ok().filter(|s| {
            s.telemetry_pending == 0
                && s.telemetry_received == total_sent
                && s.telemetry_received
                    == s.telemetry_written + s.telemetry_dropped + s.telemetry_rejected
                && s.outcomes_written >= outcomes_sent
        })
    })
    .await;
    let caught_up = up_at.elapsed();

    // Every event is accounted for: written, or dropped and counted.
    assert_eq!(settled.telemetry_rejected, 0);
    assert_eq!(
        settled.telemetry_received,
        settled.telemetry_written + settled.telemetry_dropped,
        "{settled:?}"
    );
    assert!(settled.database_up);
    // What the store says it wrote is what PostgreSQL holds: each observation folded once.
    let folded: i64 = sqlx::query_scalar("SELECT count FROM online_observations")
        .fetch_one(&pool)
        .await?;
    assert_eq!(folded as u64, settled.telemetry_written);
    // No outcome lost, none counted twice.
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger WHERE request_id LIKE 'outage-%'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(rows, outcomes_sent as i64);
    assert!(app.client.table(&TableRequest::default()).await.is_ok());
    eprintln!(
        "outage: sent {total_sent} telemetry events, written {}, dropped {} (buffer {}, peak pending {max_pending}); \
         {outcomes_sent} outcomes during the outage all in the ledger; caught up {caught_up:?} after PostgreSQL returned",
        settled.telemetry_written, settled.telemetry_dropped, settled.telemetry_capacity
    );
    app.stop().await;
    Ok(())
}
