//! The worker's deadline-aware job queue: the job with the smallest priority (the deadline
//! under earliest-deadline-first, deadline minus expected execution under least-slack-first, as
//! the scheduler set it) runs next.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use synergai_contract::Tensor;
use synergai_contract::oip::RequestedOutput;
use synergai_contract::serving::{DispatchMeta, HeldJob};
use synergai_contract::trace::TraceContext;

/// A queued job.
#[derive(Debug, Clone)]
pub struct Job {
    /// The dispatch: request metadata and configuration.
    pub meta: DispatchMeta,
    /// Inputs in graph order, checked against the catalogue.
    pub inputs: Vec<Tensor>,
    /// Outputs requested (all when empty).
    pub outputs: Vec<RequestedOutput>,
    /// Answer every output in the binary form.
    pub binary_output: bool,
    /// The client's own request id, echoed in the response.
    pub client_id: Option<String>,
    /// This worker's span of the request's trace.
    pub trace: TraceContext,
    /// When the worker received it.
    pub received: Instant,
}

impl Job {
    /// The request id.
    pub fn id(&self) -> &str {
        &self.meta.job.request_id
    }

    fn held(&self) -> HeldJob {
        HeldJob {
            request_id: self.meta.job.request_id.clone(),
            reply: self.meta.job.reply.clone(),
            deadline_us: self.meta.job.deadline_us,
        }
    }
}

#[derive(Default)]
struct State {
    queued: Vec<Job>,
    running: Vec<(HeldJob, f64)>,
    draining: bool,
    closed: bool,
}

/// What the heartbeat reports.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueView {
    /// Jobs queued.
    pub queued: u32,
    /// Jobs running.
    pub running: u32,
    /// Estimated work queued and running, ms.
    pub backlog_ms: f64,
    /// Draining.
    pub draining: bool,
    /// Every job held.
    pub jobs: Vec<HeldJob>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Shutting down.
    Draining,
    /// At capacity.
    Full(usize),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Draining => f.write_str("worker is draining"),
            Refusal::Full(n) => write!(f, "queue full ({n} jobs)"),
        }
    }
}

/// The queue, shared by the dispatch handler (async side) and the executor thread.
pub struct JobQueue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

impl JobQueue {
    /// A queue of at most `capacity` jobs.
    pub fn new(capacity: usize) -> Self {
        JobQueue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    /// Queues a job; returns the queue length, or why it was refused.
    pub fn push(&self, job: Job) -> Result<usize, Refusal> {
        let Ok(mut s) = self.state.lock() else {
            return Err(Refusal::Draining);
        };
        if s.draining || s.closed {
            return Err(Refusal::Draining);
        }
        if s.queued.len() >= self.capacity {
            return Err(Refusal::Full(self.capacity));
        }
        s.queued.push(job);
        let n = s.queued.len();
        drop(s);
        self.ready.notify_one();
        Ok(n)
    }

    /// Takes the next group to run: the most urgent job and, when `mergeable` accepts them,
    /// more queued jobs to run with it (most urgent first). Blocks until there is work; `None`
    /// once closed and empty.
    pub fn next_group(
        &self,
        mut mergeable: impl FnMut(&Job, &[&Job], &Job) -> bool,
    ) -> Option<Vec<Job>> {
        let mut s = self.state.lock().ok()?;
        loop {
            if !s.queued.is_empty() {
                break;
            }
            if s.closed {
                return None;
            }
            s = self
                .ready
                .wait_timeout(s, Duration::from_millis(200))
                .ok()?
                .0;
        }
        s.queued.sort_by_key(|j| j.meta.priority_us);
        let head = s.queued.remove(0);
        let mut picked: Vec<usize> = Vec::new();
        for k in 0..s.queued.len() {
            let group: Vec<&Job> = picked.iter().map(|&i| &s.queued[i]).collect();
            if mergeable(&head, &group, &s.queued[k]) {
                picked.push(k);
            }
        }
        let mut group = vec![head];
        for k in picked.into_iter().rev() {
            group.push(s.queued.remove(k));
        }
        group[1..].sort_by_key(|j| j.meta.priority_us);
        for j in &group {
            s.running.push((j.held(), j.meta.est_exec_ms));
        }
        Some(group)
    }

    /// Marks jobs finished (answered).
    pub fn finished(&self, ids: &[String]) {
        if let Ok(mut s) = self.state.lock() {
            s.running.retain(|(h, _)| !ids.contains(&h.request_id));
        }
    }

    /// Stops taking jobs; queued ones still run.
    pub fn drain(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.draining = true;
        }
    }

    /// Removes and returns every queued job (at the end of a drain that ran out of time).
    pub fn take_queued(&self) -> Vec<Job> {
        self.state
            .lock()
            .map(|mut s| std::mem::take(&mut s.queued))
            .unwrap_or_default()
    }

    /// Lets the executor finish: it exits once the queue is empty.
    pub fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.closed = true;
            s.draining = true;
        }
        self.ready.notify_all();
    }

    /// Whether nothing is queued or running.
    pub fn idle(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.queued.is_empty() && s.running.is_empty())
    }

    /// The state the heartbeat reports.
    pub fn view(&self) -> QueueView {
        let Ok(s) = self.state.lock() else {
            return QueueView {
                queued: 0,
                running: 0,
                backlog_ms: 0.0,
                draining: true,
                jobs: Vec::new(),
            };
        };
        let backlog_ms = s.queued.iter().map(|j| j.meta.est_exec_ms).sum::<f64>()
            + s.running.iter().map(|(_, ms)| ms).sum::<f64>();
        QueueView {
            queued: s.queued.len() as u32,
            running: s.running.len() as u32,
            backlog_ms,
            draining: s.draining,
            jobs: s
                .running
                .iter()
                .map(|(h, _)| h.clone())
                .chain(s.queued.iter().map(Job::held))
                .collect(),
        }
    }
}
