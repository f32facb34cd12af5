//! obdconv's conversion service (`obdconv serve`, `obdconv jobs`): images converted by
//! themselves when they are pushed, and never lost.
//!
//! * [`queue`]: the durable job queue, a table in the dedup database (SQLite or MySQL).

pub mod queue;
