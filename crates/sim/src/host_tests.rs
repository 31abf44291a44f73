//! Shared hosts: runs and the serving path sharing cores, where the timings are known.

use super::*;

fn point(class: &str, model: &str, threads: u32, ms: f64) -> ProfilePoint {
    ProfilePoint {
        device_class: class.into(),
        engine: "ort".into(),
        model: model.into(),
        threads,
        batch: 1,
        latency_ms: ms,
        p99_ms: None,
    }
}

/// Class `one` (1 core) runs `x` and `y` in 10 ms; class `two` (2 cores, 2 threads) runs `z`
/// in 30 ms.
fn profiles() -> Vec<ProfilePoint> {
    vec![
        point("one", "x", 1, 10.0),
        point("one", "y", 1, 10.0),
        point("two", "z", 2, 30.0),
    ]
}

/// A worker serving only `model`, of class `one` (1 core) or `two` (2 cores, 2 threads),
/// on `host`'s `cpus` (no host: a device of its own).
fn worker(model: &str, host: Option<&str>, cpus: Option<Vec<u32>>) -> WorkerGroup {
    let two = model == "z";
    WorkerGroup {
        site: "s".into(),
        device_class: if two { "two" } else { "one" }.into(),
        count: 1,
        cores: if two { 2 } else { 1 },
        models: Some(vec![model.into()]),
        threads: Some(vec![if two { 2 } else { 1 }]),
        host: host.map(str::to_owned),
        cpus,
        spin_ms: 0.0,
    }
}

/// One site, a network that takes no time, `cores` on host `box`.
fn topology(cores: u32, background: f64, workers: Vec<WorkerGroup>) -> Topology {
    Topology {
        sites: vec![SiteSpec {
            name: "s".into(),
            tier: TierSpec::Edge,
        }],
        network: NetworkSpec {
            default: LinkSpec {
                rtt_ms: 0.0,
                bandwidth_mbps: 0.0,
                emulated: false,
            },
            links: Vec::new(),
        },
        workers,
        ingress: None,
        hosts: vec![HostSpec {
            name: "box".into(),
            cores,
            background_cores: background,
        }],
        services: None,
    }
}

/// One request per model, all at time 0, with a target far away.
fn at_zero(models: &[&str]) -> Vec<Planned> {
    models
        .iter()
        .enumerate()
        .map(|(i, m)| Planned {
            seq: i as u64,
            at_ms: 0.0,
            model: (*m).into(),
            slo_ms: 1000.0,
            samples: 1,
        })
        .collect()
}

/// Each request's (latency, exec), in plan order.
fn timings(topo: &Topology, plan: &[Planned], cfg: &SimConfig) -> Vec<(f64, f64)> {
    let out = simulate(topo, &profiles(), plan, cfg).expect("simulation runs");
    out.records
        .iter()
        .map(|r| {
            assert_eq!(r.code, 200, "{r:?}");
            (r.latency_ms.expect("answered"), r.exec_ms.expect("ran"))
        })
        .collect()
}

fn close(got: &[(f64, f64)], want: &[(f64, f64)]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g.0 - w.0).abs() < 1e-6 && (g.1 - w.1).abs() < 1e-6,
            "got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn two_runs_pinned_to_one_core_share_it() {
    let plan = at_zero(&["x", "y"]);
    let cfg = SimConfig::default();
    let shared = topology(
        2,
        0.0,
        vec![
            worker("x", Some("box"), Some(vec![0])),
            worker("y", Some("box"), Some(vec![0])),
        ],
    );
    close(
        &timings(&shared, &plan, &cfg),
        &[(20.0, 20.0), (20.0, 20.0)],
    );
    let apart = topology(
        2,
        0.0,
        vec![
            worker("x", Some("box"), Some(vec![0])),
            worker("y", Some("box"), Some(vec![1])),
        ],
    );
    close(&timings(&apart, &plan, &cfg), &[(10.0, 10.0), (10.0, 10.0)]);
    let devices = topology(
        1,
        0.0,
        vec![worker("x", None, None), worker("y", None, None)],
    );
    close(
        &timings(&devices, &plan, &cfg),
        &[(10.0, 10.0), (10.0, 10.0)],
    );
}

#[test]
fn a_parallel_run_advances_at_its_slowest_thread() {
    // `z` (2 threads on cores 0-1, 30 ms of work) beside `x` (core 0, 10 ms): core 0 carries
    // two threads, so both run at half speed until `x` ends at 20 ms, having done 10 ms of
    // `z`; `z`'s last 20 ms then run alone.
    let topo = topology(
        2,
        0.0,
        vec![
            worker("x", Some("box"), Some(vec![0])),
            worker("z", Some("box"), Some(vec![0, 1])),
        ],
    );
    let plan = at_zero(&["x", "z"]);
    close(
        &timings(&topo, &plan, &SimConfig::default()),
        &[(20.0, 20.0), (40.0, 40.0)],
    );
    // A single thread moves between its cores: `x` on cores 0-1 beside `z` gets two cores'
    // capacity over three threads' load, 2/3.
    let topo = topology(
        2,
        0.0,
        vec![
            WorkerGroup {
                cores: 1,
                ..worker("x", Some("box"), Some(vec![0, 1]))
            },
            worker("z", Some("box"), Some(vec![0, 1])),
        ],
    );
    let got = timings(&topo, &plan, &SimConfig::default());
    assert!((got[0].0 - 15.0).abs() < 1e-6, "{got:?}");
}

#[test]
fn background_load_slows_every_run() {
    let topo = topology(1, 0.5, vec![worker("x", Some("box"), None)]);
    close(
        &timings(&topo, &at_zero(&["x"]), &SimConfig::default()),
        &[(15.0, 15.0)],
    );
}

#[test]
fn the_serving_path_takes_cpu_on_the_services_host() {
    let mut topo = topology(
        1,
        0.0,
        vec![
            worker("x", Some("box"), Some(vec![0])),
            worker("y", Some("box"), Some(vec![0])),
        ],
    );
    topo.services = Some(ServiceSpec {
        host: "box".into(),
        per_request_ms: 4.0,
        per_mb_ms: 10.0,
        off_path_ms: 0.0,
        off_path_per_mb_ms: 0.0,
        noise_sigma: 0.0,
    });
    let mut cfg = SimConfig::default();
    cfg.payload_bytes.insert("x".into(), 500_000);
    cfg.payload_bytes.insert("y".into(), 500_000);
    // Alone: 2 + 5 ms of path before the run, 10 ms of run, 2 ms after.
    close(&timings(&topo, &at_zero(&["x"]), &cfg), &[(19.0, 10.0)]);
    // Two at once on one core: every piece at half speed.
    close(
        &timings(&topo, &at_zero(&["x", "y"]), &cfg),
        &[(38.0, 20.0), (38.0, 20.0)],
    );
}

/// Requests of `(model, at_ms)`, with a target far away.
fn at(requests: &[(&str, f64)]) -> Vec<Planned> {
    requests
        .iter()
        .enumerate()
        .map(|(i, (m, t))| Planned {
            seq: i as u64,
            at_ms: *t,
            model: (*m).into(),
            slo_ms: 1000.0,
            samples: 1,
        })
        .collect()
}

#[test]
fn spinning_threads_take_cpu_until_the_next_run() {
    let topo = |spin_ms: f64| {
        topology(
            2,
            0.0,
            vec![
                worker("x", Some("box"), Some(vec![0])),
                WorkerGroup {
                    spin_ms,
                    ..worker("z", Some("box"), Some(vec![0, 1]))
                },
            ],
        )
    };
    let cfg = SimConfig::default();
    // `z` runs alone from 0 to 30 ms; its idle thread then spins over cores 0-1 until 50 ms.
    // `x` (core 0, from 35 ms) shares core 0 with half the spinning thread: 2/3 speed until
    // both end at 50 ms.
    let plan = at(&[("z", 0.0), ("x", 35.0)]);
    close(
        &timings(&topo(20.0), &plan, &cfg),
        &[(30.0, 30.0), (15.0, 15.0)],
    );
    close(
        &timings(&topo(0.0), &plan, &cfg),
        &[(30.0, 30.0), (10.0, 10.0)],
    );
    // The worker's next run ends the spinning: the second `z` runs alone.
    let plan = at(&[("z", 0.0), ("z", 35.0)]);
    close(
        &timings(&topo(20.0), &plan, &cfg),
        &[(30.0, 30.0), (30.0, 30.0)],
    );
}

#[test]
fn off_path_work_slows_others_but_not_its_own_answer() {
    let mut topo = topology(
        1,
        0.0,
        vec![
            worker("x", Some("box"), Some(vec![0])),
            worker("y", Some("box"), Some(vec![0])),
        ],
    );
    topo.services = Some(ServiceSpec {
        host: "box".into(),
        per_request_ms: 0.0,
        per_mb_ms: 0.0,
        off_path_ms: 10.0,
        off_path_per_mb_ms: 0.0,
        noise_sigma: 0.0,
    });
    // `x` ends at 10 ms and its 10 ms of off-path work begin; `y`'s run from 12 ms shares the
    // core with the 8 ms left of it until 28 ms, then runs its last 2 ms alone.
    close(
        &timings(
            &topo,
            &at(&[("x", 0.0), ("y", 12.0)]),
            &SimConfig::default(),
        ),
        &[(10.0, 10.0), (18.0, 18.0)],
    );
}

#[test]
fn runs_take_the_work_points_where_given() {
    let topo = topology(1, 0.0, vec![worker("x", None, None)]);
    let cfg = SimConfig {
        work: Some(vec![point("one", "x", 1, 25.0)]),
        ..SimConfig::default()
    };
    close(&timings(&topo, &at_zero(&["x"]), &cfg), &[(25.0, 25.0)]);
}

#[test]
fn bad_hosts_are_refused_with_a_reason() {
    let plan = at_zero(&["x"]);
    let cfg = SimConfig::default();
    let err = |topo: Topology| {
        simulate(&topo, &profiles(), &plan, &cfg)
            .expect_err("refused")
            .0
    };
    let e = err(topology(1, 0.0, vec![worker("x", Some("nowhere"), None)]));
    assert!(e.contains("unknown host \"nowhere\""), "{e}");
    let e = err(topology(
        1,
        0.0,
        vec![worker("x", Some("box"), Some(vec![3]))],
    ));
    assert!(e.contains("cpu 3 is not on host"), "{e}");
    let e = err(topology(
        2,
        0.0,
        vec![worker("z", Some("box"), Some(vec![1]))],
    ));
    assert!(e.contains("2 cores but pinned to 1 cpus"), "{e}");
    let e = err(topology(1, 0.0, vec![worker("x", None, Some(vec![0]))]));
    assert!(e.contains("cpus without a host"), "{e}");
    let e = err(topology(
        1,
        0.0,
        vec![WorkerGroup {
            spin_ms: 5.0,
            ..worker("x", None, None)
        }],
    ));
    assert!(e.contains("spin_ms without a host"), "{e}");
    let e = err(topology(0, 0.0, vec![worker("x", None, None)]));
    assert!(e.contains("cores must be 1 to 64"), "{e}");
    let mut t = topology(1, 0.0, vec![worker("x", None, None)]);
    t.services = Some(ServiceSpec {
        host: "elsewhere".into(),
        per_request_ms: 1.0,
        per_mb_ms: 0.0,
        off_path_ms: 0.0,
        off_path_per_mb_ms: 0.0,
        noise_sigma: 0.0,
    });
    let e = err(t);
    assert!(e.contains("services names unknown host"), "{e}");
}

#[test]
fn topologies_without_hosts_read_as_before() {
    let t: Topology = serde_json::from_str(
        r#"{"sites": [{"name": "s", "tier": "edge"}],
            "workers": [{"site": "s", "device_class": "one", "cores": 1}]}"#,
    )
    .expect("parses");
    assert!(t.hosts.is_empty() && t.services.is_none());
    assert_eq!(t.workers[0].host, None);
    let t: Topology = serde_json::from_str(
        r#"{"sites": [{"name": "s", "tier": "edge"}],
            "hosts": [{"name": "box", "cores": 2, "background_cores": 0.1}],
            "services": {"host": "box", "per_request_ms": 1.5, "per_mb_ms": 12},
            "workers": [{"site": "s", "device_class": "one", "cores": 1, "host": "box", "cpus": [1]}]}"#,
    )
    .expect("parses");
    assert_eq!(t.hosts[0].cores, 2);
    assert_eq!(t.workers[0].cpus, Some(vec![1]));
}

#[test]
fn the_planned_path_changes_decisions_not_times() {
    let topo = topology(1, 0.0, vec![worker("x", None, None)]);
    let plan = vec![Planned {
        seq: 0,
        at_ms: 0.0,
        model: "x".into(),
        slo_ms: 30.0,
        samples: 1,
    }];
    let run = |planning_path| {
        let mut cfg = SimConfig {
            planning_path,
            ..SimConfig::default()
        };
        cfg.policy_config.shed_late_fraction = Some(0.0);
        let r = simulate(&topo, &profiles(), &plan, &cfg)
            .expect("simulation runs")
            .records
            .remove(0);
        (r.code, r.latency_ms)
    };
    // Planned 15 ms of path + 10 ms of run meet the 30 ms target; the path itself takes none.
    assert_eq!(run(None), (200, Some(10.0)));
    assert_eq!(run(Some((15.0, 0.0))), (200, Some(10.0)));
    // Planned 25 ms + 10 ms miss it: shed at once.
    assert_eq!(run(Some((25.0, 0.0))), (504, Some(0.0)));
}
