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
    /// This worker's span of the request's trace, as sent on with the reply.
    pub trace: TraceContext,
    /// The same span, open until the job is answered.
    pub span: tracing::Span,
    /// Its `queue` child span, open while the job waits in the queue.
    pub waiting: tracing::Span,
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
            domain: self.meta.job.domain.clone(),
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

    /// Removes and returns the queued jobs whose deadline is before `now_us` (µs since the Unix
    /// epoch): they are answered 504 at once, not when the executor reaches them.
    pub fn take_expired(&self, now_us: i64) -> Vec<Job> {
        let Ok(mut s) = self.state.lock() else {
            return Vec::new();
        };
        // Checked every 100 ms: leave the queue untouched when nothing expired.
        if !s.queued.iter().any(|j| j.meta.job.deadline_us < now_us) {
            return Vec::new();
        }
        let (expired, kept) = std::mem::take(&mut s.queued)
            .into_iter()
            .partition(|j| j.meta.job.deadline_us < now_us);
        s.queued = kept;
        expired
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

#[cfg(test)]
mod tests {
    use super::*;
    use synergai_contract::serving::JobMeta;

    fn job(id: &str, model: &str, priority_us: i64, est_exec_ms: f64) -> Job {
        Job {
            meta: DispatchMeta {
                job: JobMeta {
                    request_id: id.into(),
                    model: model.into(),
                    reply: format!("_INBOX.{id}"),
                    arrival_us: 0,
                    deadline_us: priority_us,
                    slo_ms: 100.0,
                    samples: 1,
                    payload_bytes: 0,
                    ingress_site: "local".into(),
                    domain: None,
                },
                engine: "ort".into(),
                threads: 1,
                batch: 1,
                priority_us,
                policy: "synergai".into(),
                est_exec_ms,
                scheduler: "s".into(),
                attempt: 1,
                body_seq: None,
            },
            inputs: Vec::new(),
            outputs: Vec::new(),
            binary_output: false,
            client_id: None,
            trace: TraceContext::root([1; 24]),
            span: tracing::Span::none(),
            waiting: tracing::Span::none(),
            received: Instant::now(),
        }
    }

    #[test]
    fn most_urgent_first_and_merges_what_the_predicate_accepts() {
        let q = JobQueue::new(8);
        for (id, model, p) in [
            ("late", "a", 300),
            ("urgent", "a", 100),
            ("other", "b", 200),
            ("mid", "a", 250),
        ] {
            q.push(job(id, model, p, 5.0)).expect("room");
        }
        let group = q
            .next_group(|head, _, cand| cand.meta.job.model == head.meta.job.model)
            .expect("work");
        let ids: Vec<&str> = group.iter().map(Job::id).collect();
        assert_eq!(
            ids,
            ["urgent", "mid", "late"],
            "head first, then the merged jobs most urgent first"
        );
        let view = q.view();
        assert_eq!((view.queued, view.running), (1, 3));
        assert!((view.backlog_ms - 20.0).abs() < 1e-9);
        assert_eq!(view.jobs.len(), 4);
        q.finished(&["urgent".into(), "mid".into(), "late".into()]);
        let next = q.next_group(|_, _, _| false).expect("work");
        assert_eq!(next.iter().map(Job::id).collect::<Vec<_>>(), ["other"]);
    }

    #[test]
    fn expired_jobs_leave_the_queue_and_running_ones_stay() {
        let q = JobQueue::new(8);
        for (id, deadline) in [("run", 50), ("past", 100), ("due", 200), ("later", 300)] {
            q.push(job(id, "m", deadline, 1.0)).expect("room");
        }
        let running = q.next_group(|_, _, _| false).expect("work");
        assert_eq!(running[0].id(), "run");
        let expired: Vec<String> = q
            .take_expired(200)
            .iter()
            .map(|j| j.id().to_owned())
            .collect();
        assert_eq!(
            expired,
            ["past"],
            "only queued jobs with a deadline before now"
        );
        let view = q.view();
        assert_eq!((view.queued, view.running), (2, 1));
        assert!(q.take_expired(0).is_empty());
    }

    #[test]
    fn refuses_when_full_or_draining_and_closes_when_empty() {
        let q = JobQueue::new(1);
        q.push(job("a", "m", 1, 1.0)).expect("room");
        assert_eq!(q.push(job("b", "m", 1, 1.0)), Err(Refusal::Full(1)));
        q.drain();
        assert_eq!(q.push(job("c", "m", 1, 1.0)), Err(Refusal::Draining));
        assert!(q.view().draining);
        assert_eq!(q.take_queued().len(), 1);
        assert!(q.idle());
        q.close();
        assert!(
            q.next_group(|_, _, _| false).is_none(),
            "closed and empty: the executor stops"
        );
    }
}
