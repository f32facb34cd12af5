//! obdconv's conversion service (`obdconv serve`, `obdconv worker`, `obdconv jobs`): images
//! converted by themselves when they are pushed, and never lost.
//!
//! * [`queue`]: the durable job queue, a table in the dedup database (SQLite or MySQL).
//! * [`config`]: the TOML configuration: knobs, registries, `[[rule]]`s.
//! * [`rules`]: from a pushed image to a job (globs, output tags, job keys, loop guard).
//! * [`events`]: what registries send (distribution notifications, Harbor webhooks).
//! * [`worker`]: claim, convert in-process under a fenced lease, record the outcome.
//! * [`http`]: ingest endpoints, the jobs API, probes; [`metrics`]: `/metrics`.
//! * [`service`]: `serve` and `worker`, and their SIGTERM shutdown.
//! * [`backfill`]: jobs for images pushed before the service listened (`obdconv backfill`).

pub mod backfill;
pub mod config;
pub mod events;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod rules;
pub mod service;
pub mod worker;
