//! SLO-MAEL (Seo et al., "SLO-Aware Inference Scheduler for Heterogeneous Processors in Edge
//! Platforms", ACM TACO 18(4), 2021), as the paper's baseline: exhaustive assignment of a window
//! of requests to workers with fixed configurations.

use crate::{Decision, PolicyConfig, Rejection, Request, Snapshot, eligible, fixed_candidate};

/// The most requests a window may hold so that `workers^requests <= budget` (at least one).
pub(crate) fn window_cap(workers: usize, window: usize, budget: u64) -> usize {
    let window = window.max(1);
    if workers <= 1 {
        return window;
    }
    let mut requests = 1;
    let mut combos = workers as u64;
    while requests < window {
        match combos.checked_mul(workers as u64) {
            Some(next) if next <= budget => {
                combos = next;
                requests += 1;
            }
            _ => break,
        }
    }
    requests
}

/// A request's options: (worker, network, exec) per eligible worker.
struct Options {
    workers: Vec<usize>,
    network_ms: Vec<f64>,
    exec_ms: Vec<f64>,
    option: Vec<crate::ConfigOption>,
}

/// The SLO-MAEL requirement: the target is at least 1.5 times the expected latency.
const SLO_FACTOR: f64 = 1.5;

pub(crate) fn place(
    now_ms: f64,
    requests: &[Request],
    snap: &Snapshot<'_>,
    config: &PolicyConfig,
) -> Vec<Result<Decision, Rejection>> {
    let mut out: Vec<Result<Decision, Rejection>> = Vec::with_capacity(requests.len());
    let mut extra = vec![0.0; snap.workers.len()];
    let mut start = 0;
    while start < requests.len() {
        // Grow the window while the number of assignments stays within budget.
        let mut end = start;
        let mut combos: u64 = 1;
        let mut chunk: Vec<(usize, Options)> = Vec::new();
        while end < requests.len() && chunk.len() < config.slo_mael_window.max(1) {
            let req = &requests[end];
            let mut opts = Options {
                workers: Vec::new(),
                network_ms: Vec::new(),
                exec_ms: Vec::new(),
                option: Vec::new(),
            };
            for w in 0..snap.workers.len() {
                if eligible(&snap.workers[w], req.model) {
                    let c = fixed_candidate(now_ms, req, snap, &[], w);
                    opts.workers.push(w);
                    opts.network_ms.push(c.network_ms);
                    opts.exec_ms.push(c.exec_ms);
                    opts.option.push(c.option);
                }
            }
            let n = opts.workers.len() as u64;
            if n > 0 {
                let next = combos.saturating_mul(n);
                if !chunk.is_empty() && next > config.slo_mael_max_assignments {
                    break;
                }
                combos = next;
                chunk.push((end, opts));
            }
            end += 1;
        }
        let placed = best_assignment(now_ms, requests, snap, &chunk, &extra);
        // Results in request order; requests without an eligible worker are rejected.
        let mut by_request: Vec<Option<Decision>> = vec![None; end - start];
        for ((i, _), d) in chunk.iter().zip(placed) {
            extra[d.worker] += d.exec_ms;
            by_request[i - start] = Some(d);
        }
        out.extend(by_request.into_iter().map(|d| d.ok_or(Rejection::NoWorker)));
        start = end;
    }
    out
}

/// Enumerates every assignment of the chunk's requests to their eligible workers and returns
/// the decisions of the best one.
fn best_assignment(
    now_ms: f64,
    requests: &[Request],
    snap: &Snapshot<'_>,
    chunk: &[(usize, Options)],
    extra: &[f64],
) -> Vec<Decision> {
    let r = chunk.len();
    if r == 0 {
        return Vec::new();
    }
    let considered = chunk
        .iter()
        .map(|(_, o)| o.workers.len() as u32)
        .product::<u32>()
        .max(1);
    let mut choice = vec![0usize; r];
    let mut best_choice = choice.clone();
    let mut best_score = (0usize, f64::INFINITY);
    let mut order: Vec<usize> = Vec::with_capacity(r);
    let mut completion = vec![0.0; r];
    loop {
        let score = score(
            now_ms,
            requests,
            snap,
            chunk,
            extra,
            &choice,
            &mut order,
            &mut completion,
        );
        if score.0 > best_score.0 || (score.0 == best_score.0 && score.1 < best_score.1) {
            best_score = score;
            best_choice.copy_from_slice(&choice);
        }
        // Odometer over the eligible workers of each request.
        let mut k = 0;
        loop {
            if k == r {
                return decisions(
                    now_ms,
                    requests,
                    snap,
                    chunk,
                    extra,
                    &best_choice,
                    considered,
                );
            }
            choice[k] += 1;
            if choice[k] < chunk[k].1.workers.len() {
                break;
            }
            choice[k] = 0;
            k += 1;
        }
    }
}

/// Completion of each request of the chunk under an assignment, each worker running its share
/// least-slack-first after its backlog; fills `completion` and returns (satisfied, total latency).
#[allow(clippy::too_many_arguments)]
fn score(
    now_ms: f64,
    requests: &[Request],
    snap: &Snapshot<'_>,
    chunk: &[(usize, Options)],
    extra: &[f64],
    choice: &[usize],
    order: &mut Vec<usize>,
    completion: &mut [f64],
) -> (usize, f64) {
    order.clear();
    order.extend(0..chunk.len());
    // Group by worker, least slack (deadline - exec) first within a worker.
    order.sort_by(|&a, &b| {
        let (wa, wb) = (chunk[a].1.workers[choice[a]], chunk[b].1.workers[choice[b]]);
        let slack = |i: usize| requests[chunk[i].0].deadline_ms - chunk[i].1.exec_ms[choice[i]];
        wa.cmp(&wb).then(slack(a).total_cmp(&slack(b)))
    });
    let mut satisfied = 0;
    let mut total = 0.0;
    let mut queued = 0.0;
    let mut current = usize::MAX;
    for &i in order.iter() {
        let (req_idx, opts) = (&chunk[i].0, &chunk[i].1);
        let w = opts.workers[choice[i]];
        if w != current {
            current = w;
            queued = snap.workers[w].backlog_ms.max(0.0) + extra[w];
        }
        let exec = opts.exec_ms[choice[i]];
        let done = now_ms + opts.network_ms[choice[i]] + queued + exec;
        queued += exec;
        completion[i] = done;
        let req = &requests[*req_idx];
        let latency = done - req.arrival_ms;
        if req.deadline_ms - req.arrival_ms >= SLO_FACTOR * latency {
            satisfied += 1;
        }
        total += latency;
    }
    (satisfied, total)
}

fn decisions(
    now_ms: f64,
    requests: &[Request],
    snap: &Snapshot<'_>,
    chunk: &[(usize, Options)],
    extra: &[f64],
    choice: &[usize],
    considered: u32,
) -> Vec<Decision> {
    let mut order = Vec::new();
    let mut completion = vec![0.0; chunk.len()];
    score(
        now_ms,
        requests,
        snap,
        chunk,
        extra,
        choice,
        &mut order,
        &mut completion,
    );
    chunk
        .iter()
        .enumerate()
        .map(|(i, (req_idx, opts))| {
            let req = &requests[*req_idx];
            let k = choice[i];
            let exec_ms = opts.exec_ms[k];
            let network_ms = opts.network_ms[k];
            Decision {
                worker: opts.workers[k],
                config: crate::Config {
                    engine: opts.option[k].engine,
                    threads: opts.option[k].threads,
                    batch: opts.option[k].batch,
                },
                exec_ms,
                network_ms,
                wait_ms: completion[i] - now_ms - network_ms - exec_ms,
                completion_ms: completion[i],
                slack_ms: req.deadline_ms - completion[i],
                priority_ms: req.deadline_ms - exec_ms,
                considered,
            }
        })
        .collect()
}
