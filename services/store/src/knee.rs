//! The knee rule: which configuration of a model to run on a device class.
//!
//! Threads stop paying past a knee, and a scheduler that spends cores beyond it only starves
//! other work. So, per (engine, batch): find the best thread count by the metric, then take the
//! fewest threads whose metric is within `epsilon` of that best. Those knees, one per (engine,
//! batch), are then ranked by the metric; ties go to fewer threads, then smaller batches, then
//! the engine name, so the answer is deterministic.

use std::collections::BTreeMap;

use synergai_contract::store::{ConfigEstimate, KneeMetric, KneeRule};

/// Score of a configuration: larger is better whatever the metric.
fn score(c: &ConfigEstimate, metric: KneeMetric) -> f64 {
    match metric {
        KneeMetric::Qps => c.qps,
        KneeMetric::P95 => -c.p95_ms,
    }
}

/// Whether `c` is within `epsilon` of `best` on the metric.
fn within(c: &ConfigEstimate, best: &ConfigEstimate, rule: &KneeRule) -> bool {
    match rule.metric {
        KneeMetric::Qps => c.qps >= best.qps * (1.0 - rule.epsilon),
        KneeMetric::P95 => c.p95_ms <= best.p95_ms * (1.0 + rule.epsilon),
    }
}

/// The knee of each (engine, batch) group, ranked best first. Empty input, empty output.
pub fn rank(configs: &[ConfigEstimate], rule: &KneeRule) -> Vec<ConfigEstimate> {
    let mut groups: BTreeMap<(&str, u32), Vec<&ConfigEstimate>> = BTreeMap::new();
    for c in configs {
        groups
            .entry((c.engine.as_str(), c.batch))
            .or_default()
            .push(c);
    }
    let mut knees: Vec<ConfigEstimate> = groups
        .into_values()
        .filter_map(|mut group| {
            group.sort_by_key(|c| c.threads);
            let best = group
                .iter()
                .copied()
                .max_by(|a, b| score(a, rule.metric).total_cmp(&score(b, rule.metric)))?;
            group.into_iter().find(|c| within(c, best, rule)).cloned()
        })
        .collect();
    knees.sort_by(|a, b| {
        score(b, rule.metric)
            .total_cmp(&score(a, rule.metric))
            .then(a.threads.cmp(&b.threads))
            .then(a.batch.cmp(&b.batch))
            .then_with(|| a.engine.cmp(&b.engine))
    });
    knees
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(engine: &str, threads: u32, batch: u32, qps: f64, p95: f64) -> ConfigEstimate {
        ConfigEstimate {
            engine: engine.into(),
            threads,
            batch,
            mean_ms: batch as f64 * 1000.0 / qps,
            p50_ms: p95 * 0.9,
            p95_ms: p95,
            p99_ms: p95 * 1.1,
            qps,
            online_ms: None,
            online_count: 0,
            drift: None,
            drifted: false,
        }
    }

    #[test]
    fn fewest_threads_within_epsilon_of_the_best() {
        // Throughput flattens after 4 threads: 8 threads is best by 2%, so with 5% the knee is 4.
        let configs = [
            cfg("ort", 1, 1, 100.0, 12.0),
            cfg("ort", 2, 1, 190.0, 6.5),
            cfg("ort", 4, 1, 300.0, 4.0),
            cfg("ort", 8, 1, 306.0, 3.9),
        ];
        let rule = KneeRule {
            metric: KneeMetric::Qps,
            epsilon: 0.05,
        };
        let ranked = rank(&configs, &rule);
        assert_eq!(ranked.len(), 1);
        assert_eq!(ranked[0].threads, 4);
        // With 1% the knee is the best itself.
        let strict = rank(
            &configs,
            &KneeRule {
                metric: KneeMetric::Qps,
                epsilon: 0.01,
            },
        );
        assert_eq!(strict[0].threads, 8);
        // By p95 with 5%: best is 3.9 ms (8 threads), 4 threads at 4.0 is within 5%.
        let by_p95 = rank(
            &configs,
            &KneeRule {
                metric: KneeMetric::P95,
                epsilon: 0.05,
            },
        );
        assert_eq!(by_p95[0].threads, 4);
    }

    #[test]
    fn knees_per_engine_and_batch_are_ranked() {
        let configs = [
            cfg("ort", 1, 1, 350.0, 3.0),
            cfg("ort", 2, 1, 520.0, 2.0),
            cfg("ort", 1, 8, 323.0, 25.0),
            cfg("ort", 2, 8, 584.0, 14.0),
            cfg("tract", 1, 1, 126.0, 8.2),
            cfg("tract", 2, 1, 115.0, 12.8),
        ];
        let ranked = rank(&configs, &KneeRule::default());
        let got: Vec<(&str, u32, u32)> = ranked
            .iter()
            .map(|c| (c.engine.as_str(), c.threads, c.batch))
            .collect();
        // ort b8: 2 threads (584) beats 1 (323); ort b1: 2 threads; tract b1: 1 thread is best.
        assert_eq!(got, [("ort", 2, 8), ("ort", 2, 1), ("tract", 1, 1)]);

        let latency = rank(
            &configs,
            &KneeRule {
                metric: KneeMetric::P95,
                epsilon: 0.05,
            },
        );
        let got: Vec<(&str, u32, u32)> = latency
            .iter()
            .map(|c| (c.engine.as_str(), c.threads, c.batch))
            .collect();
        assert_eq!(got, [("ort", 2, 1), ("tract", 1, 1), ("ort", 2, 8)]);
    }

    #[test]
    fn ties_go_to_fewer_threads_then_smaller_batch() {
        let configs = [
            cfg("ort", 2, 2, 100.0, 5.0),
            cfg("tract", 1, 4, 100.0, 5.0),
            cfg("ort", 1, 4, 100.0, 5.0),
        ];
        let ranked = rank(&configs, &KneeRule::default());
        let got: Vec<(&str, u32, u32)> = ranked
            .iter()
            .map(|c| (c.engine.as_str(), c.threads, c.batch))
            .collect();
        assert_eq!(got, [("ort", 1, 4), ("tract", 1, 4), ("ort", 2, 2)]);
        assert!(rank(&[], &KneeRule::default()).is_empty());
    }
}
