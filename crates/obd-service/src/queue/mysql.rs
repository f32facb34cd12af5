//! The MySQL / MariaDB queue (fleet): the `obdconv_jobs` table in the MySQL dedup database.
//!
//! Not yet implemented: [`MySqlQueue::connect`] refuses with a clear error.

use super::{QueueError, Result};

/// The queue in a MySQL or MariaDB database.
pub struct MySqlQueue;

impl MySqlQueue {
    /// Connects with a Go mysql-driver DSN (`user:pass@tcp(host:3306)/db`).
    pub fn connect(_dsn: &str) -> Result<Box<dyn super::Queue>> {
        Err(QueueError::Unavailable(
            "the MySQL job queue is not implemented yet: use --db-type sqlite".into(),
        ))
    }
}
