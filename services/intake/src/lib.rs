//! The SynergAI intake: the front door. It speaks NATS request-reply on
//! `synergai.v1.infer.<model>` and the Open Inference Protocol over HTTP, validates each request
//! against the model catalogue, stamps id, arrival and deadline, and hands it to the scheduler
//! through a JetStream work queue.
//!
//! - [`accept`] — admission: validation and normalisation.
//! - [`service`] — the two front doors.

pub mod accept;
pub mod service;

pub use service::{Intake, IntakeConfig};
