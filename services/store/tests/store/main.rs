//! Store integration tests on the real PostgreSQL and the real NATS server.
//!
//! - `queries`: every query, on a fresh migrated database per test (`#[sqlx::test]`).
//! - `service`: the store over NATS: each subject, bad input, events, the profile cache.
//! - `outage`: PostgreSQL stopped under a steady telemetry stream (its own PostgreSQL cluster).

mod helpers;
mod outage;
mod queries;
mod service;
