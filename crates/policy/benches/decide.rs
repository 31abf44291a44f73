//! Decision time of each policy at 10, 100, 1,000 and 10,000 workers (criterion), then a table
//! of per-decision p50 and p99 measured in the same run, and `slo-mael`'s time per window as the
//! window grows.
//!
//! `cargo bench -p synergai-policy --bench decide`

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion};
use synergai_policy::{
    ConfigOption, ModelSet, Network, Policy, PolicyConfig, PolicyKind, ProfileIndex, Request,
    Snapshot, Tier, WorkerState,
};

const MODELS: usize = 13;
const SITES: usize = 16;
/// (cores, tier) of the device classes: an 8-core cloud server, a 2-core cloud VM, a 6-core
/// Jetson-class board and a 4-core Raspberry-Pi-class board.
const CLASSES: [(u32, Tier); 4] = [
    (8, Tier::Cloud),
    (2, Tier::Cloud),
    (6, Tier::Edge),
    (4, Tier::Edge),
];

/// A deterministic generator, so every run sees the same cluster.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn profiles() -> ProfileIndex {
    let mut p = ProfileIndex::new(CLASSES.len(), MODELS, 1000.0);
    for (c, &(cores, _)) in CLASSES.iter().enumerate() {
        for m in 0..MODELS {
            let base = 3.0 + 4.0 * m as f64 * (8.0 / f64::from(cores)).sqrt();
            for engine in 0..2u8 {
                for threads in [1u32, 2, 4, 8].into_iter().filter(|&t| t <= cores) {
                    for batch in [1u32, 2, 4, 8] {
                        let speedup = f64::from(threads).powf(0.7);
                        let engine_factor = if engine == 0 { 1.0 } else { 1.6 };
                        let ms = base * engine_factor * f64::from(batch).powf(0.9) / speedup;
                        p.add(
                            c as u16,
                            m as u16,
                            ConfigOption {
                                engine,
                                threads,
                                batch,
                            },
                            ms,
                        );
                    }
                }
            }
        }
    }
    p
}

fn cluster(n: usize) -> (Vec<WorkerState>, Network) {
    let mut rng = Lcg(n as u64 + 1);
    let workers = (0..n)
        .map(|i| {
            let class = i % CLASSES.len();
            let (cores, tier) = CLASSES[class];
            WorkerState {
                site: (i % SITES) as u16,
                tier,
                class: class as u16,
                max_threads: cores,
                backlog_ms: rng.next() * 50.0,
                in_flight: (rng.next() * 4.0) as u32,
                models: ModelSet::ALL,
                accepting: rng.next() > 0.02,
            }
        })
        .collect();
    let mut net = Network::uniform(SITES, 20.0, 1000.0);
    for a in 0..SITES {
        for b in a + 1..SITES {
            net.set(
                a as u16,
                b as u16,
                5.0 + rng.next() * 60.0,
                100.0 + rng.next() * 900.0,
            );
        }
    }
    (workers, net)
}

fn request(i: usize) -> Request {
    Request {
        model: (i % MODELS) as u16,
        samples: 1,
        payload_bytes: 602_112,
        arrival_ms: 0.0,
        deadline_ms: 60.0 + (i % 7) as f64 * 20.0,
        ingress: (i % SITES) as u16,
    }
}

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];
const POLICIES: [PolicyKind; 6] = [
    PolicyKind::Synergai,
    PolicyKind::SloMael,
    PolicyKind::Mael,
    PolicyKind::LeastLoaded,
    PolicyKind::RoundRobin,
    PolicyKind::Random,
];

fn criterion_benches(c: &mut Criterion, profiles: &ProfileIndex) {
    let mut group = c.benchmark_group("decide");
    for &n in &SIZES {
        let (workers, net) = cluster(n);
        let snap = Snapshot {
            workers: &workers,
            network: &net,
            profiles,
        };
        for kind in POLICIES {
            let mut policy = Policy::new(kind, PolicyConfig::default());
            let mut i = 0;
            group.bench_with_input(BenchmarkId::new(kind.as_str(), n), &n, |b, _| {
                b.iter(|| {
                    i += 1;
                    black_box(policy.place(0.0, &[request(i)], &snap))
                })
            });
        }
    }
    group.finish();
}

fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at =
        |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    (at(0.50), at(0.99))
}

fn table(profiles: &ProfileIndex) {
    println!("\nper-decision time, one request per decision (µs):");
    println!(
        "{:<14} {:>10} {:>10} {:>10}",
        "policy", "workers", "p50", "p99"
    );
    for &n in &SIZES {
        let (workers, net) = cluster(n);
        let snap = Snapshot {
            workers: &workers,
            network: &net,
            profiles,
        };
        for kind in POLICIES {
            let mut policy = Policy::new(kind, PolicyConfig::default());
            let runs = if n >= 10_000 { 2_000 } else { 20_000 };
            let mut samples = Vec::with_capacity(runs);
            for i in 0..runs + 200 {
                let req = [request(i)];
                let t = Instant::now();
                black_box(policy.place(0.0, &req, &snap));
                if i >= 200 {
                    samples.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            let (p50, p99) = percentiles(&mut samples);
            println!("{:<14} {n:>10} {p50:>10.2} {p99:>10.2}", kind.as_str());
        }
    }

    println!("\nslo-mael: time per window as the window grows (µs; assignments = workers^window):");
    println!(
        "{:>8} {:>8} {:>14} {:>12} {:>12}",
        "workers", "window", "assignments", "p50", "p99"
    );
    for (n, windows) in [(10usize, vec![1usize, 2, 3, 4, 5]), (100, vec![1, 2, 3])] {
        let (workers, net) = cluster(n);
        let snap = Snapshot {
            workers: &workers,
            network: &net,
            profiles,
        };
        for w in windows {
            let config = PolicyConfig {
                slo_mael_window: w,
                slo_mael_max_assignments: u64::MAX,
                ..PolicyConfig::default()
            };
            let mut policy = Policy::new(PolicyKind::SloMael, config);
            let reqs: Vec<Request> = (0..w).map(request).collect();
            let assignments = (n as u64).pow(w as u32);
            let runs = (2_000_000 / assignments).clamp(3, 2_000) as usize;
            let mut samples = Vec::with_capacity(runs);
            for _ in 0..runs {
                let t = Instant::now();
                black_box(policy.place(0.0, &reqs, &snap));
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let (p50, p99) = percentiles(&mut samples);
            println!("{n:>8} {w:>8} {assignments:>14} {p50:>12.1} {p99:>12.1}");
        }
    }
    let default_cap: Vec<String> = SIZES
        .iter()
        .map(|&n| {
            format!(
                "{n} workers: {}",
                Policy::new(PolicyKind::SloMael, PolicyConfig::default()).window(n)
            )
        })
        .collect();
    println!(
        "slo-mael window cap at the default budget of {} assignments: {}",
        PolicyConfig::default().slo_mael_max_assignments,
        default_cap.join(", ")
    );
}

fn main() {
    let profiles = profiles();
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &profiles);
    c.final_summary();
    table(&profiles);
}
