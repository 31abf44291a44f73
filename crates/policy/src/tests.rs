//! Policies on hand-built snapshots where the right answer is known.

use super::*;

const ORT: EngineId = 0;
const TRACT: EngineId = 1;
const EDGE_CLASS: ClassId = 0;
const CLOUD_CLASS: ClassId = 1;
const MODEL: ModelId = 0;

fn opt(engine: EngineId, threads: u32, batch: u32) -> ConfigOption {
    ConfigOption {
        engine,
        threads,
        batch,
    }
}

fn worker(site: SiteId, tier: Tier, class: ClassId, max_threads: u32) -> WorkerState {
    WorkerState {
        site,
        tier,
        class,
        max_threads,
        backlog_ms: 0.0,
        in_flight: 0,
        models: ModelSet::default().with(MODEL),
        accepting: true,
    }
}

fn request(arrival_ms: f64, slo_ms: f64, samples: u32) -> Request {
    Request {
        model: MODEL,
        samples,
        payload_bytes: 0,
        arrival_ms,
        deadline_ms: arrival_ms + slo_ms,
        ingress: 0,
    }
}

/// An ARM edge board where tract beats ONNX Runtime, and a fast x86 cloud 40 ms away.
fn edge_and_cloud() -> (Vec<WorkerState>, Network, ProfileIndex) {
    let mut p = ProfileIndex::new(2, 1, 1000.0);
    p.add(EDGE_CLASS, MODEL, opt(ORT, 4, 1), 30.0);
    p.add(EDGE_CLASS, MODEL, opt(TRACT, 1, 1), 12.0);
    p.add(EDGE_CLASS, MODEL, opt(TRACT, 4, 1), 14.0);
    p.add(CLOUD_CLASS, MODEL, opt(ORT, 8, 1), 5.0);
    let mut net = Network::uniform(2, 0.0, 0.0);
    net.set(0, 1, 40.0, 0.0);
    let workers = vec![
        worker(0, Tier::Edge, EDGE_CLASS, 4),
        worker(1, Tier::Cloud, CLOUD_CLASS, 8),
    ];
    (workers, net, p)
}

/// Feeds requests one by one at their arrival, as a live scheduler would, letting backlogs drain
/// in between; returns the decisions.
fn run(
    policy: &mut Policy,
    requests: &[Request],
    mut workers: Vec<WorkerState>,
    net: &Network,
    p: &ProfileIndex,
) -> Vec<Decision> {
    let mut busy_until = vec![0.0f64; workers.len()];
    let mut out = Vec::new();
    for req in requests {
        let now = req.arrival_ms;
        for (w, state) in workers.iter_mut().enumerate() {
            state.backlog_ms = (busy_until[w] - now).max(0.0);
        }
        let snap = Snapshot {
            workers: &workers,
            network: net,
            profiles: p,
        };
        let d = policy
            .place(now, std::slice::from_ref(req), &snap)
            .remove(0)
            .expect("placed");
        busy_until[d.worker] = busy_until[d.worker].max(now) + d.exec_ms;
        out.push(d);
    }
    out
}

fn late(decisions: &[Decision]) -> usize {
    decisions.iter().filter(|d| d.slack_ms < 0.0).count()
}

#[test]
fn synergai_meets_deadlines_round_robin_and_slo_mael_miss() {
    let (workers, net, p) = edge_and_cloud();
    let requests: Vec<Request> = (0..6)
        .map(|i| request(f64::from(i) * 20.0, 35.0, 1))
        .collect();
    let cfg = PolicyConfig::default();

    let synergai = run(
        &mut Policy::new(PolicyKind::Synergai, cfg),
        &requests,
        workers.clone(),
        &net,
        &p,
    );
    assert_eq!(late(&synergai), 0, "{synergai:#?}");
    assert!(synergai.iter().all(|d| d.worker == 0
        && d.config
            == Config {
                engine: TRACT,
                threads: 1,
                batch: 1
            }));

    let rr = run(
        &mut Policy::new(PolicyKind::RoundRobin, cfg),
        &requests,
        workers.clone(),
        &net,
        &p,
    );
    assert_eq!(late(&rr), 3, "every other request goes 40 ms away: {rr:#?}");

    let slo_mael = run(
        &mut Policy::new(PolicyKind::SloMael, cfg),
        &requests,
        workers.clone(),
        &net,
        &p,
    );
    assert!(
        late(&slo_mael) >= 2,
        "ONNX Runtime's 30 ms on the board queues up: {slo_mael:#?}"
    );
    assert!(
        slo_mael.iter().all(|d| d.config.engine == ORT),
        "the baseline has no configuration dimension"
    );

    let mael = run(
        &mut Policy::new(PolicyKind::Mael, cfg),
        &requests,
        workers,
        &net,
        &p,
    );
    assert!(late(&mael) >= 2, "{mael:#?}");
}

#[test]
fn configuration_choice_is_what_saves_the_deadline() {
    // tract on a 2-core board: batching hurts (per-sample time grows) and the second thread
    // does not pay, as measured on squeezenet.
    let mut p = ProfileIndex::new(1, 1, 1000.0);
    p.add(0, MODEL, opt(ORT, 1, 1), 7.9);
    p.add(0, MODEL, opt(ORT, 2, 1), 8.2);
    p.add(0, MODEL, opt(ORT, 1, 8), 124.0);
    p.add(0, MODEL, opt(ORT, 2, 8), 110.0);
    let workers = vec![worker(0, Tier::Edge, 0, 2)];
    let net = Network::uniform(1, 0.0, 0.0);
    let snap = Snapshot {
        workers: &workers,
        network: &net,
        profiles: &p,
    };
    let req = request(0.0, 80.0, 8);

    let d = Policy::new(PolicyKind::Synergai, PolicyConfig::default())
        .place(0.0, &[req], &snap)
        .remove(0)
        .expect("placed");
    assert_eq!(
        d.config,
        Config {
            engine: ORT,
            threads: 1,
            batch: 1
        }
    );
    assert!(
        (d.exec_ms - 8.0 * 7.9).abs() < 1e-9 && d.slack_ms > 0.0,
        "{d:?}"
    );

    let fixed = Policy::new(PolicyKind::Mael, PolicyConfig::default())
        .place(0.0, &[req], &snap)
        .remove(0)
        .expect("placed");
    assert_eq!(
        fixed.config,
        Config {
            engine: ORT,
            threads: 2,
            batch: 8
        }
    );
    assert!(
        fixed.slack_ms < 0.0,
        "all cores and one batch of 8 take 110 ms: {fixed:?}"
    );

    // One sample: the thread count alone decides (1 thread, 7.9 ms, meets 8 ms; 2 threads do not).
    let one = request(0.0, 8.0, 1);
    let d = Policy::new(PolicyKind::Synergai, PolicyConfig::default())
        .place(0.0, &[one], &snap)
        .remove(0)
        .expect("placed");
    assert_eq!((d.config.threads, d.slack_ms > 0.0), (1, true));
    let fixed = Policy::new(PolicyKind::LeastLoaded, PolicyConfig::default())
        .place(0.0, &[one], &snap)
        .remove(0)
        .expect("placed");
    assert_eq!((fixed.config.threads, fixed.slack_ms < 0.0), (2, true));
}

#[test]
fn slo_mael_enumerates_to_satisfy_both() {
    // A loose request arrives first and a tight one second. Greedy least latency gives the fast
    // worker to the loose one and the tight one misses target >= 1.5 x latency on the slow
    // worker; the exhaustive search runs the tight one on the fast worker (least slack first).
    let mut p = ProfileIndex::new(2, 1, 1000.0);
    p.add(0, MODEL, opt(ORT, 4, 1), 10.0);
    p.add(1, MODEL, opt(ORT, 4, 1), 18.0);
    let workers = vec![worker(0, Tier::Edge, 0, 4), worker(0, Tier::Edge, 1, 4)];
    let net = Network::uniform(1, 0.0, 0.0);
    let snap = Snapshot {
        workers: &workers,
        network: &net,
        profiles: &p,
    };
    let reqs = [request(0.0, 60.0, 1), request(0.0, 24.0, 1)];
    let placed = |kind| -> Vec<Decision> {
        Policy::new(kind, PolicyConfig::default())
            .place(0.0, &reqs, &snap)
            .into_iter()
            .map(|r| r.expect("placed"))
            .collect()
    };
    let satisfied = |ds: &[Decision]| {
        ds.iter()
            .zip(&reqs)
            .filter(|(d, r)| r.deadline_ms - r.arrival_ms >= 1.5 * (d.completion_ms - r.arrival_ms))
            .count()
    };
    let exhaustive = placed(PolicyKind::SloMael);
    assert_eq!(
        exhaustive.iter().map(|d| d.worker).collect::<Vec<_>>(),
        [1, 0]
    );
    assert_eq!(satisfied(&exhaustive), 2);
    assert_eq!(exhaustive[0].considered, 4, "2 workers ^ 2 requests");
    let greedy = placed(PolicyKind::Mael);
    assert_eq!(greedy.iter().map(|d| d.worker).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(satisfied(&greedy), 1);
}

#[test]
fn slo_mael_window_is_capped_by_the_assignment_budget() {
    assert_eq!(slo_mael::window_cap(10, 8, 20_000), 4);
    assert_eq!(slo_mael::window_cap(100, 8, 20_000), 2);
    assert_eq!(slo_mael::window_cap(10_000, 8, 20_000), 1);
    assert_eq!(slo_mael::window_cap(1, 8, 20_000), 8);
    let p = Policy::new(PolicyKind::SloMael, PolicyConfig::default());
    assert_eq!(p.window(10), 4);
    assert_eq!(
        Policy::new(PolicyKind::Synergai, PolicyConfig::default()).window(10),
        1
    );

    // A window larger than the cap is placed in chunks, each within budget.
    let (workers, net, prof) = edge_and_cloud();
    let snap = Snapshot {
        workers: &workers,
        network: &net,
        profiles: &prof,
    };
    let cfg = PolicyConfig {
        slo_mael_max_assignments: 4,
        ..PolicyConfig::default()
    };
    let reqs: Vec<Request> = (0..5).map(|_| request(0.0, 100.0, 1)).collect();
    let ds = Policy::new(PolicyKind::SloMael, cfg).place(0.0, &reqs, &snap);
    assert_eq!(ds.len(), 5);
    assert!(
        ds.iter()
            .all(|d| d.as_ref().is_ok_and(|d| d.considered <= 4))
    );
}

#[test]
fn hopeless_requests_are_shed_only_when_configured() {
    let (workers, net, p) = edge_and_cloud();
    let snap = Snapshot {
        workers: &workers,
        network: &net,
        profiles: &p,
    };
    let req = request(0.0, 4.0, 1); // 12 ms at best: 8 ms late, twice the target
    let kept = Policy::new(PolicyKind::Synergai, PolicyConfig::default())
        .place(0.0, &[req], &snap)
        .remove(0);
    let d = kept.expect("placed anyway");
    assert!((d.slack_ms + 8.0).abs() < 1e-9, "least lateness: {d:?}");
    let shedding = PolicyConfig {
        shed_late_fraction: Some(1.0),
        ..PolicyConfig::default()
    };
    match Policy::new(PolicyKind::Synergai, shedding)
        .place(0.0, &[req], &snap)
        .remove(0)
    {
        Err(Rejection::Hopeless { best }) => assert_eq!(best.worker, 0),
        other => panic!("expected shedding, got {other:?}"),
    }
    // Late but within the fraction: still placed.
    let lenient = PolicyConfig {
        shed_late_fraction: Some(3.0),
        ..PolicyConfig::default()
    };
    assert!(
        Policy::new(PolicyKind::Synergai, lenient)
            .place(0.0, &[req], &snap)
            .remove(0)
            .is_ok()
    );
}

#[test]
fn no_worker_when_none_serves_or_accepts() {
    let (mut workers, net, p) = edge_and_cloud();
    workers[0].accepting = false;
    workers[1].models = ModelSet::default();
    let snap = Snapshot {
        workers: &workers,
        network: &net,
        profiles: &p,
    };
    for kind in PolicyKind::ALL {
        let r = Policy::new(kind, PolicyConfig::default())
            .place(0.0, &[request(0.0, 50.0, 1)], &snap)
            .remove(0);
        assert_eq!(r, Err(Rejection::NoWorker), "{kind}");
    }
}

#[test]
fn tiers_round_robin_and_random() {
    let (workers, net, p) = edge_and_cloud();
    let snap = Snapshot {
        workers: &workers,
        network: &net,
        profiles: &p,
    };
    let req = request(0.0, 1000.0, 1);
    let pick = |kind| {
        Policy::new(kind, PolicyConfig::default())
            .place(0.0, &[req], &snap)
            .remove(0)
            .expect("placed")
            .worker
    };
    assert_eq!(pick(PolicyKind::EdgeOnly), 0);
    assert_eq!(pick(PolicyKind::CloudOnly), 1);
    // Both meet a loose deadline: least worker time wins (cloud's 5 ms), edge first only on ties.
    assert_eq!(pick(PolicyKind::Synergai), 1);

    let mut rr = Policy::new(PolicyKind::RoundRobin, PolicyConfig::default());
    let seq: Vec<usize> = (0..4)
        .map(|_| {
            rr.place(0.0, &[req], &snap)
                .remove(0)
                .expect("placed")
                .worker
        })
        .collect();
    assert_eq!(seq, [0, 1, 0, 1]);

    let draw = |seed| {
        let mut r = Policy::new(
            PolicyKind::Random,
            PolicyConfig {
                seed,
                ..PolicyConfig::default()
            },
        );
        (0..32)
            .map(|_| {
                r.place(0.0, &[req], &snap)
                    .remove(0)
                    .expect("placed")
                    .worker
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(7), draw(7), "a seed fixes the sequence");
    assert!(draw(7).contains(&0) && draw(7).contains(&1));
}

#[test]
fn placements_within_one_call_see_each_other() {
    let (workers, net, p) = edge_and_cloud();
    let snap = Snapshot {
        workers: &workers,
        network: &net,
        profiles: &p,
    };
    let reqs = [request(0.0, 100.0, 1), request(0.0, 100.0, 1)];
    let ds = Policy::new(PolicyKind::LeastLoaded, PolicyConfig::default()).place(0.0, &reqs, &snap);
    let (a, b) = (ds[0].expect("placed"), ds[1].expect("placed"));
    assert_ne!(a.worker, b.worker, "the second sees the first's backlog");
}

#[test]
fn profile_index_fixed_and_cold_start() {
    let mut p = ProfileIndex::new(1, 2, 500.0);
    p.add(0, 0, opt(ORT, 2, 1), 10.0);
    p.add(0, 0, opt(ORT, 2, 4), 30.0);
    p.add(0, 0, opt(TRACT, 1, 1), 9.0);
    // Exact batch; scaled from the largest smaller batch; bounded by a larger one.
    assert_eq!(p.fixed(0, 0, 4, 8).1, 30.0);
    assert_eq!(p.fixed(0, 0, 8, 8), (opt(ORT, 2, 8), 60.0));
    assert_eq!(p.fixed(0, 0, 2, 8).1, 20.0);
    // Threads above what the worker has are never chosen.
    assert_eq!(p.fixed(0, 0, 1, 1).0.threads, 1);
    assert_eq!(
        p.fixed(0, 0, 1, 1).1,
        500.0,
        "no ORT profile at 1 thread: cold start"
    );
    assert_eq!(p.fastest(0, 0, 3, 8), (opt(TRACT, 1, 1), 27.0));
    // A model with nothing profiled: the cold default, or the model's own cold figure.
    assert_eq!(p.fastest(0, 1, 2, 4), (opt(ORT, 4, 2), 1000.0));
    p.set_cold(1, 40.0);
    assert_eq!(p.fastest(0, 1, 2, 4).1, 80.0);
    // Out-of-range ids are ignored, not a panic.
    p.add(9, 9, opt(ORT, 1, 1), 1.0);
    assert!(p.options(9, 9).is_empty());
}

#[test]
fn network_cost_counts_round_trip_and_payload() {
    let mut net = Network::uniform(3, 10.0, 100.0);
    assert_eq!(net.cost_ms(1, 1, 0), 0.0);
    assert_eq!(net.cost_ms(0, 2, 0), 10.0);
    // 1.25 MB over 100 Mbit/s = 100 ms.
    assert!((net.cost_ms(0, 2, 1_250_000) - 110.0).abs() < 1e-9);
    net.set(0, 2, 50.0, 1000.0);
    assert!((net.cost_ms(2, 0, 1_250_000) - 60.0).abs() < 1e-9);
    assert_eq!(
        net.cost_ms(7, 9, 0),
        0.0,
        "unknown sites clamp to the last one"
    );
    assert_eq!("slo-mael".parse::<PolicyKind>(), Ok(PolicyKind::SloMael));
    assert!("fastest".parse::<PolicyKind>().is_err());
}

#[test]
fn candidates_show_what_was_weighed() {
    let (workers, net, p) = edge_and_cloud();
    let snap = Snapshot {
        workers: &workers,
        network: &net,
        profiles: &p,
    };
    let req = request(0.0, 35.0, 1);
    let aware =
        Policy::new(PolicyKind::Synergai, PolicyConfig::default()).candidates(0.0, &req, &snap, 5);
    assert_eq!(
        aware
            .iter()
            .map(|c| (c.worker, c.config.engine))
            .collect::<Vec<_>>(),
        [(0, TRACT), (1, ORT)]
    );
    assert!((aware[1].network_ms - 40.0).abs() < 1e-9);
    let fixed = Policy::new(PolicyKind::RoundRobin, PolicyConfig::default())
        .candidates(0.0, &req, &snap, 1);
    assert_eq!(
        (fixed.len(), fixed[0].config.engine, fixed[0].exec_ms),
        (1, ORT, 30.0)
    );
    assert!(
        Policy::new(PolicyKind::Synergai, PolicyConfig::default())
            .candidates(0.0, &req, &snap, 0)
            .is_empty()
    );
}

#[test]
fn profile_index_from_named_points() {
    let point = |class, engine, model, threads, batch, exec_ms, slow_ms| NamedPoint {
        device_class: class,
        engine,
        model,
        threads,
        batch,
        exec_ms,
        slow_ms,
    };
    let points = [
        point("arm", "tract", "a", 1, 1, 12.0, 15.0),
        point("arm", "ort", "a", 4, 2, 30.0, 40.0),
        // Not loaded on the class: out of the index, but counts for the cold rule.
        point("arm", "ort", "a", 2, 1, 5.0, 50.0),
        // Unknown class: counts for the cold rule only; unknown engine and model: skipped.
        point("gpu", "ort", "b", 1, 4, 8.0, 80.0),
        point("arm", "onnx-mystery", "b", 1, 1, 1.0, 999.0),
        point("arm", "ort", "zzz", 1, 1, 1.0, 999.0),
    ];
    let p = ProfileIndex::from_points(
        &["x86", "arm"],
        &["a", "b", "c"],
        points,
        |_, _, _, threads| threads != 2,
        2.0,
        700.0,
    );
    assert_eq!((p.classes(), p.models()), (2, 3));
    assert_eq!(
        p.options(1, 0),
        &[(opt(TRACT, 1, 1), 12.0), (opt(ORT, 4, 2), 30.0)]
    );
    assert!(p.options(0, 0).is_empty() && p.options(1, 1).is_empty());
    // Cold: 2 x the slowest per sample (50 ms for a, 80/4 for b); c has nothing: 700.
    assert_eq!(p.fastest(0, 0, 1, 8).1, 100.0);
    assert_eq!(p.fastest(0, 1, 1, 8).1, 40.0);
    assert_eq!(p.fastest(0, 2, 1, 8).1, 700.0);
    assert_eq!(ENGINES[0], "ort");
}

#[test]
fn synergai_decides_as_its_reference_form() {
    // A deterministic generator.
    let mut state = 0x5eed_u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for round in 0..400 {
        let sites = 1 + (next() * 4.0) as usize;
        let mut net = Network::uniform(sites, next() * 30.0, next() * 1000.0);
        net.set(0, (sites - 1) as SiteId, next() * 50.0, 0.0);
        let mut p = ProfileIndex::new(3, 2, 500.0);
        for _ in 0..12 {
            let o = opt(
                (next() * 2.0) as EngineId,
                1 + (next() * 8.0) as u32,
                1 + (next() * 4.0) as u32,
            );
            // Coarse times, so that ties happen.
            p.add(
                (next() * 3.0) as ClassId,
                (next() * 2.0) as ModelId,
                o,
                (next() * 6.0).round() * 5.0,
            );
        }
        let n = 1 + (next() * 40.0) as usize;
        let workers: Vec<WorkerState> = (0..n)
            .map(|_| WorkerState {
                // Sometimes beyond the network's sites (clamped).
                site: (next() * (sites + 1) as f64) as SiteId,
                tier: if next() < 0.5 {
                    Tier::Edge
                } else {
                    Tier::Cloud
                },
                class: (next() * 4.0) as ClassId,
                max_threads: 1 + (next() * 8.0) as u32,
                backlog_ms: if next() < 0.3 {
                    0.0
                } else {
                    (next() * 12.0).round() * 5.0 - 5.0
                },
                in_flight: 0,
                models: if next() < 0.9 {
                    ModelSet::ALL
                } else {
                    ModelSet::default()
                },
                accepting: next() < 0.95,
            })
            .collect();
        let extra: Vec<f64> = if round % 2 == 0 {
            Vec::new()
        } else {
            (0..n).map(|_| (next() * 3.0).round() * 5.0).collect()
        };
        let snap = Snapshot {
            workers: &workers,
            network: &net,
            profiles: &p,
        };
        let config = PolicyConfig {
            shed_late_fraction: (round % 3 == 0).then_some(0.2),
            ..PolicyConfig::default()
        };
        let policy = Policy::new(PolicyKind::Synergai, config);
        for _ in 0..10 {
            let arrival_ms = next() * 100.0;
            let req = Request {
                model: (next() * 2.0) as ModelId,
                samples: 1 + (next() * 5.0) as u32,
                payload_bytes: (next() * 100_000.0) as u64,
                arrival_ms,
                deadline_ms: arrival_ms + (next() * 20.0).round() * 5.0,
                ingress: (next() * sites as f64) as SiteId,
            };
            for tier in [None, Some(Tier::Edge), Some(Tier::Cloud)] {
                assert_eq!(
                    policy.synergai(arrival_ms, &req, &snap, &extra, tier),
                    policy.synergai_reference(arrival_ms, &req, &snap, &extra, tier),
                    "round {round}, {req:?}, {tier:?}"
                );
            }
        }
    }
}
