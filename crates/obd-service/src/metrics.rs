//! `/metrics`: Prometheus text. Job counts by state, the oldest queued job's age and the
//! attempts come from the database (every process of a fleet reports the same); webhook
//! requests, job durations, lease losses seen, dedup hits and bytes are this process's own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use crate::queue::Counts;

/// Upper bounds (seconds) of the job duration histogram.
const BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    /// (source, outcome) → requests.
    webhooks: BTreeMap<(String, String), u64>,
    /// result → histogram.
    jobs: BTreeMap<String, Histogram>,
    lease_losses: u64,
    dedup_hits: u64,
    bytes_uploaded: u64,
    bytes_read: u64,
}

/// This process's counters.
#[derive(Default)]
pub struct Metrics(Mutex<Inner>);

impl Metrics {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A webhook request from `source` (`distribution`, `harbor`, `manual`) ended with
    /// `outcome` (`accepted`, `ignored`, `bad_request`, `unauthorized`, `unavailable`).
    pub fn webhook(&self, source: &str, outcome: &str) {
        *self
            .inner()
            .webhooks
            .entry((source.into(), outcome.into()))
            .or_default() += 1;
    }

    /// A job run ended with `result` after `seconds`.
    pub fn job(&self, result: &str, seconds: f64) {
        let mut i = self.inner();
        let h = i.jobs.entry(result.into()).or_default();
        for (n, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[n] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// A worker of this process found its lease gone.
    pub fn lease_lost(&self) {
        self.inner().lease_losses += 1;
    }

    /// What a finished conversion reused and moved.
    pub fn conversion(&self, dedup_hits: u64, bytes_read: u64, bytes_uploaded: u64) {
        let mut i = self.inner();
        i.dedup_hits += dedup_hits;
        i.bytes_read += bytes_read;
        i.bytes_uploaded += bytes_uploaded;
    }

    /// Prometheus text exposition of these counters and the database's `counts` (None when
    /// the database did not answer).
    pub fn render(&self, counts: Option<&Counts>) -> String {
        let i = self.inner();
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(
            w,
            "# HELP obdconv_up 1 when the job database answered this scrape."
        );
        let _ = writeln!(w, "# TYPE obdconv_up gauge");
        let _ = writeln!(w, "obdconv_up {}", u8::from(counts.is_some()));
        if let Some(c) = counts {
            let _ = writeln!(w, "# HELP obdconv_jobs Jobs in the database by state.");
            let _ = writeln!(w, "# TYPE obdconv_jobs gauge");
            for (state, n) in &c.by_state {
                let _ = writeln!(w, "obdconv_jobs{{state=\"{state}\"}} {n}");
            }
            let _ = writeln!(
                w,
                "# HELP obdconv_oldest_queued_seconds Age of the oldest job waiting to run."
            );
            let _ = writeln!(w, "# TYPE obdconv_oldest_queued_seconds gauge");
            let _ = writeln!(
                w,
                "obdconv_oldest_queued_seconds {:.3}",
                c.oldest_queued_secs
            );
            let _ = writeln!(
                w,
                "# HELP obdconv_job_attempts Attempts of the jobs in the database."
            );
            let _ = writeln!(w, "# TYPE obdconv_job_attempts gauge");
            let _ = writeln!(w, "obdconv_job_attempts {}", c.attempts);
            let _ = writeln!(
                w,
                "# HELP obdconv_job_lease_expiries Leases the reaper took back, over all jobs."
            );
            let _ = writeln!(w, "# TYPE obdconv_job_lease_expiries gauge");
            let _ = writeln!(w, "obdconv_job_lease_expiries {}", c.lease_losses);
        }
        let _ = writeln!(
            w,
            "# HELP obdconv_webhook_requests_total Event requests by source and outcome."
        );
        let _ = writeln!(w, "# TYPE obdconv_webhook_requests_total counter");
        for ((src, out), n) in &i.webhooks {
            let _ = writeln!(
                w,
                "obdconv_webhook_requests_total{{source=\"{src}\",outcome=\"{out}\"}} {n}"
            );
        }
        let _ = writeln!(
            w,
            "# HELP obdconv_job_duration_seconds Job runs of this process by result."
        );
        let _ = writeln!(w, "# TYPE obdconv_job_duration_seconds histogram");
        for (result, h) in &i.jobs {
            for (n, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    w,
                    "obdconv_job_duration_seconds_bucket{{result=\"{result}\",le=\"{b}\"}} {}",
                    h.counts[n]
                );
            }
            let _ = writeln!(
                w,
                "obdconv_job_duration_seconds_bucket{{result=\"{result}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                w,
                "obdconv_job_duration_seconds_sum{{result=\"{result}\"}} {:.3}",
                h.sum
            );
            let _ = writeln!(
                w,
                "obdconv_job_duration_seconds_count{{result=\"{result}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(w, "# HELP obdconv_lease_losses_total Runs of this process stopped because their lease was gone.");
        let _ = writeln!(w, "# TYPE obdconv_lease_losses_total counter");
        let _ = writeln!(w, "obdconv_lease_losses_total {}", i.lease_losses);
        let _ = writeln!(
            w,
            "# HELP obdconv_dedup_hits_total Layers reused from the dedup database."
        );
        let _ = writeln!(w, "# TYPE obdconv_dedup_hits_total counter");
        let _ = writeln!(w, "obdconv_dedup_hits_total {}", i.dedup_hits);
        let _ = writeln!(
            w,
            "# HELP obdconv_bytes_read_total Source bytes read by conversions."
        );
        let _ = writeln!(w, "# TYPE obdconv_bytes_read_total counter");
        let _ = writeln!(w, "obdconv_bytes_read_total {}", i.bytes_read);
        let _ = writeln!(
            w,
            "# HELP obdconv_bytes_uploaded_total Bytes really uploaded by conversions."
        );
        let _ = writeln!(w, "# TYPE obdconv_bytes_uploaded_total counter");
        let _ = writeln!(w, "obdconv_bytes_uploaded_total {}", i.bytes_uploaded);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::JobState;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.webhook("distribution", "accepted");
        m.job("succeeded", 3.0);
        m.lease_lost();
        let c = Counts {
            by_state: vec![(JobState::Queued, 2)],
            oldest_queued_secs: 1.5,
            attempts: 3,
            lease_losses: 1,
        };
        let t = m.render(Some(&c));
        for want in [
            "obdconv_up 1",
            "obdconv_jobs{state=\"queued\"} 2",
            "obdconv_webhook_requests_total{source=\"distribution\",outcome=\"accepted\"} 1",
            "obdconv_job_duration_seconds_bucket{result=\"succeeded\",le=\"5\"} 1",
            "obdconv_job_duration_seconds_bucket{result=\"succeeded\",le=\"1\"} 0",
            "obdconv_lease_losses_total 1",
        ] {
            assert!(t.contains(want), "{want} not in\n{t}");
        }
        assert!(m.render(None).contains("obdconv_up 0"));
    }
}
