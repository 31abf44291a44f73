//! The SynergAI scheduler: the online phase. It places each accepted request on the worker and
//! configuration that meets its latency target, with the policy in force ([`synergai_policy`]),
//! switchable at run time on `synergai.v1.scheduler.control`.
//!
//! - [`core`] — state: workers from heartbeats, round trips, reservations, jobs in flight, the
//!   profile index.
//! - [`service`] — the tasks: request intake from JetStream, dispatch, completion, lost workers.
//! - [`config`] — configuration.

pub mod config;
pub mod core;
pub mod service;

pub use service::Scheduler;
