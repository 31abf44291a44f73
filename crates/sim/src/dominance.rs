//! The reduced snapshot: per group of interchangeable workers, only those that could be chosen
//! (see the crate docs, "Speed", for why the decision is the same as over every worker).

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use synergai_policy::{
    ClassId, Decision, ModelId, ModelSet, Network, PolicyKind, ProfileIndex, Rejection, Request,
    SiteId, Tier, WorkerState,
};

/// The wait a policy reads off a worker, `backlog_ms.max(0.0) + 0.0` (as `synergai`'s scan and
/// the baselines' candidates form it): never NaN, never -0.
fn wait_of(s: &WorkerState) -> f64 {
    s.backlog_ms.max(0.0) + 0.0
}

/// A wait ordered by [`f64::total_cmp`] (waits are never NaN nor -0, where that order and `<`
/// agree).
#[derive(Debug, Clone, Copy)]
struct Wait(f64);

impl PartialEq for Wait {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Wait {}
impl Ord for Wait {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}
impl PartialOrd for Wait {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Workers alike in everything a per-request policy reads but their wait.
#[derive(Debug, Clone)]
struct Group {
    tier: Tier,
    class: ClassId,
    max_threads: u32,
    models: ModelSet,
    /// Accepting members by (wait, index).
    by_wait: BTreeSet<(Wait, u32)>,
    /// Accepting members by index.
    by_index: BTreeSet<u32>,
}

/// Relative distance under which two waits may round to the same estimated completion (eight
/// units in the last place would do; this is 2⁵ times that).
const TIE: f64 = 1.0 / (1u64 << 45) as f64;

/// The groups, kept in step with the snapshot, and the reduced snapshot built per decision.
#[derive(Debug, Clone)]
pub(crate) struct Dominance {
    group_of: Vec<u32>,
    groups: Vec<Group>,
    /// The wait each worker is filed under in its group, `None` while not accepting.
    filed: Vec<Option<f64>>,
    /// `edge-only`, `cloud-only`: the tier the policy keeps to.
    tier: Option<Tier>,
    /// Per (model, samples): the largest execution estimate any worker could be given.
    exec_bound: HashMap<(ModelId, u32), f64>,
    picked: Vec<u32>,
    reduced: Vec<WorkerState>,
}

impl Dominance {
    /// The groups of `states`, when `policy` decides each request on its own by a comparison in
    /// which, within a group, a smaller wait never loses (see the crate docs); `None` for the
    /// others (`round-robin`, `random`, `slo-mael`).
    pub fn new(policy: PolicyKind, states: &[WorkerState]) -> Option<Dominance> {
        let tier = match policy {
            PolicyKind::Synergai | PolicyKind::Mael | PolicyKind::LeastLoaded => None,
            PolicyKind::EdgeOnly => Some(Tier::Edge),
            PolicyKind::CloudOnly => Some(Tier::Cloud),
            PolicyKind::SloMael | PolicyKind::RoundRobin | PolicyKind::Random => return None,
        };
        let mut ids: HashMap<(SiteId, bool, ClassId, u32, u128), u32> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of = Vec::with_capacity(states.len());
        for s in states {
            let key = (
                s.site,
                s.tier == Tier::Edge,
                s.class,
                s.max_threads,
                s.models.0,
            );
            let g = *ids.entry(key).or_insert_with(|| {
                groups.push(Group {
                    tier: s.tier,
                    class: s.class,
                    max_threads: s.max_threads,
                    models: s.models,
                    by_wait: BTreeSet::new(),
                    by_index: BTreeSet::new(),
                });
                (groups.len() - 1) as u32
            });
            group_of.push(g);
        }
        let mut d = Dominance {
            group_of,
            groups,
            filed: vec![None; states.len()],
            tier,
            exec_bound: HashMap::new(),
            picked: Vec::new(),
            reduced: Vec::new(),
        };
        for (w, s) in states.iter().enumerate() {
            d.sync(w, s);
        }
        Some(d)
    }

    /// Files worker `w` anew after its `backlog_ms` or `accepting` changed.
    pub fn sync(&mut self, w: usize, state: &WorkerState) {
        let now = state.accepting.then(|| wait_of(state));
        let before = self.filed[w];
        if before.map(f64::to_bits) == now.map(f64::to_bits) {
            return;
        }
        let group = &mut self.groups[self.group_of[w] as usize];
        if let Some(old) = before {
            group.by_wait.remove(&(Wait(old), w as u32));
        }
        if let Some(new) = now {
            group.by_wait.insert((Wait(new), w as u32));
        }
        match (before, now) {
            (None, Some(_)) => {
                group.by_index.insert(w as u32);
            }
            (Some(_), None) => {
                group.by_index.remove(&(w as u32));
            }
            _ => {}
        }
        self.filed[w] = now;
    }

    /// The reduced snapshot for deciding `req` alone at `now`, with the index in `states` of
    /// each of its positions; `None` when the bound behind the reduction is not finite (then
    /// the whole snapshot is to be used).
    pub fn reduce(
        &mut self,
        now: f64,
        req: &Request,
        states: &[WorkerState],
        network: &Network,
        profiles: &ProfileIndex,
    ) -> Option<(&[WorkerState], &[u32])> {
        let groups = &self.groups;
        let exec = *self
            .exec_bound
            .entry((req.model, req.samples))
            .or_insert_with(|| {
                groups.iter().fold(0.0f64, |m, g| {
                    let f = profiles.fastest(g.class, req.model, req.samples, g.max_threads);
                    let x = profiles.fixed(g.class, req.model, req.samples, g.max_threads);
                    m.max(f.1.abs()).max(x.1.abs())
                })
            });
        let net = (0..network.sites()).fold(0.0f64, |m, s| {
            m.max(
                network
                    .cost_ms(req.ingress, s as SiteId, req.payload_bytes)
                    .abs(),
            )
        });
        // Every estimated completion is formed from now, a network cost, a wait and an
        // execution estimate: `bound` is at least the size of all but the wait.
        let bound = now.abs() + net + exec;
        if !bound.is_finite() {
            return None;
        }
        self.picked.clear();
        for g in &self.groups {
            if !g.models.contains(req.model) || self.tier.is_some_and(|t| t != g.tier) {
                continue;
            }
            // The first accepting member: `synergai` prices a class by the first eligible
            // worker of it it meets.
            let Some(&first) = g.by_index.first() else {
                continue;
            };
            self.picked.push(first);
            // The least wait, lowest index first, and every member whose wait is so close to
            // it that its completion may round to the same figure (then a lower index of it
            // would win the tie).
            let Some(&(Wait(least), w)) = g.by_wait.first() else {
                continue;
            };
            self.picked.push(w);
            let after = (Bound::Excluded((Wait(least), u32::MAX)), Bound::Unbounded);
            for &(Wait(wait), w) in g.by_wait.range(after) {
                if wait - least > TIE * (bound + wait) + f64::MIN_POSITIVE {
                    break;
                }
                self.picked.push(w);
            }
        }
        self.picked.sort_unstable();
        self.picked.dedup();
        self.reduced.clear();
        self.reduced
            .extend(self.picked.iter().map(|&w| states[w as usize].clone()));
        Some((&self.reduced, &self.picked))
    }
}

/// A decision over the reduced snapshot translated to the whole one's indices.
pub(crate) fn translate(
    result: Result<Decision, Rejection>,
    picked: &[u32],
) -> Result<Decision, Rejection> {
    let map = |mut d: Decision| {
        d.worker = picked.get(d.worker).map_or(d.worker, |&w| w as usize);
        d
    };
    match result {
        Ok(d) => Ok(map(d)),
        Err(Rejection::Hopeless { best }) => Err(Rejection::Hopeless { best: map(best) }),
        Err(Rejection::NoWorker) => Err(Rejection::NoWorker),
    }
}
