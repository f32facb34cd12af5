//! The behaviour every [`Queue`] back end must have, run by each back end's tests.

use std::time::Duration;

use super::*;

/// A job converting `digest` of `127.0.0.1:5000/app`.
pub fn job(digest: &str) -> NewJob {
    NewJob {
        key: JobKey::new("127.0.0.1:5000", "app", digest, "all", "p1", "app:v1_obd"),
        host: "127.0.0.1:5000".into(),
        repository: "app".into(),
        digest: digest.into(),
        tag: Some("v1".into()),
        rule: "all".into(),
        target: "127.0.0.1:5000/app".into(),
        output_tag: "v1_obd".into(),
        spec: "{}".into(),
        max_attempts: 3,
        deadline_secs: 600,
    }
}

fn state(q: &dyn Queue, id: i64) -> JobState {
    q.get(id).unwrap().unwrap().state
}

/// Runs every check on an empty queue.
pub fn run_all(q: &dyn Queue) {
    q.ping().unwrap();
    let lease = Duration::from_secs(60);

    // Enqueue is idempotent by key.
    let a = q.enqueue(&job("sha256:a")).unwrap();
    assert!(a.created);
    let again = q.enqueue(&job("sha256:a")).unwrap();
    assert_eq!(
        again,
        Enqueued {
            id: a.id,
            created: false
        }
    );
    let b = q.enqueue(&job("sha256:b")).unwrap();
    assert_ne!(a.id, b.id);

    // Oldest first; a claim counts an attempt and holds a lease.
    let c1 = q.claim("w1", lease).unwrap().unwrap();
    assert_eq!(c1.job.id, a.id);
    assert_eq!(c1.job.state, JobState::Running);
    assert_eq!(c1.job.attempts, 1);
    assert_eq!(c1.job.lease_owner.as_deref(), Some("w1"));
    assert!(c1.job.lease_expires_ms.unwrap() > c1.job.created_ms);
    let c2 = q.claim("w2", lease).unwrap().unwrap();
    assert_eq!(c2.job.id, b.id);
    assert!(q.claim("w3", lease).unwrap().is_none());

    // Heartbeats hold with the token, not without.
    assert!(q.heartbeat(a.id, &c1.token, lease).unwrap());
    assert!(!q.heartbeat(a.id, "not-the-token", lease).unwrap());

    // Success is recorded with the token only.
    let ok = Outcome::Succeeded {
        output_digest: "sha256:out".into(),
        output_ref: "127.0.0.1:5000/app:v1_obd@sha256:out".into(),
    };
    assert!(!q.complete(a.id, "not-the-token", &ok).unwrap());
    assert!(q.complete(a.id, &c1.token, &ok).unwrap());
    let ja = q.get(a.id).unwrap().unwrap();
    assert_eq!(ja.state, JobState::Succeeded);
    assert_eq!(ja.output_digest.as_deref(), Some("sha256:out"));
    assert!(ja.finished_ms.is_some() && ja.lease_owner.is_none());
    // A finished job's token is spent.
    assert!(!q.heartbeat(a.id, &c1.token, lease).unwrap());

    // A transient failure waits out its backoff, then runs again; after max_attempts it is
    // dead.
    let fail = |ms| Outcome::Failed {
        error: "503".into(),
        retry_in: Duration::from_millis(ms),
    };
    assert!(q.complete(b.id, &c2.token, &fail(60_000)).unwrap());
    assert_eq!(state(q, b.id), JobState::Failed);
    assert!(
        q.claim("w1", lease).unwrap().is_none(),
        "backoff not honoured"
    );
    assert!(q.retry(b.id).unwrap(), "retry of a failed job");
    let c = q.claim("w1", lease).unwrap().unwrap();
    assert_eq!((c.job.id, c.job.attempts), (b.id, 1));
    assert!(q.complete(b.id, &c.token, &fail(0)).unwrap());
    let c = q.claim("w1", lease).unwrap().unwrap();
    assert_eq!(c.job.attempts, 2);
    assert!(q.complete(b.id, &c.token, &fail(0)).unwrap());
    let c = q.claim("w1", lease).unwrap().unwrap();
    assert_eq!(c.job.attempts, 3);
    assert!(q.complete(b.id, &c.token, &fail(0)).unwrap());
    let jb = q.get(b.id).unwrap().unwrap();
    assert_eq!(jb.state, JobState::Dead, "max_attempts used up");
    assert_eq!(jb.last_error.as_deref(), Some("503"));
    // `retry` runs a dead job again, from its first attempt.
    assert!(q.retry(b.id).unwrap());
    let c = q.claim("w1", lease).unwrap().unwrap();
    assert_eq!((c.job.id, c.job.attempts), (b.id, 1));
    assert!(!q.retry(b.id).unwrap(), "a running job is not retried");
    assert!(q
        .complete(
            b.id,
            &c.token,
            &Outcome::Dead {
                error: "bad input".into()
            }
        )
        .unwrap());
    assert_eq!(state(q, b.id), JobState::Dead);

    // A lease that expires is reaped: the job is queued again, the old token fenced.
    let d = q.enqueue(&job("sha256:d")).unwrap();
    let c = q.claim("w1", Duration::from_millis(1)).unwrap().unwrap();
    assert_eq!(c.job.id, d.id);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(q.reap().unwrap(), 1);
    let jd = q.get(d.id).unwrap().unwrap();
    assert_eq!((jd.state, jd.lease_losses), (JobState::Queued, 1));
    assert!(!q.heartbeat(d.id, &c.token, lease).unwrap(), "fenced");
    assert!(!q.complete(d.id, &c.token, &ok).unwrap(), "fenced");
    let c = q.claim("w2", lease).unwrap().unwrap();
    assert_eq!((c.job.id, c.job.attempts), (d.id, 2));
    // Release (shutdown) gives it back without spending the attempt.
    assert!(q.release(d.id, &c.token).unwrap());
    let jd = q.get(d.id).unwrap().unwrap();
    assert_eq!((jd.state, jd.attempts), (JobState::Queued, 1));
    let c = q.claim("w2", lease).unwrap().unwrap();
    assert!(q
        .complete(
            d.id,
            &c.token,
            &Outcome::Skipped {
                reason: "ours".into()
            }
        )
        .unwrap());
    assert_eq!(state(q, d.id), JobState::Skipped);

    // Listing and counts.
    let all = q.list(None, 10).unwrap();
    assert_eq!(
        all.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![d.id, b.id, a.id]
    );
    assert_eq!(q.list(Some(JobState::Dead), 10).unwrap().len(), 1);
    let n = q.counts().unwrap();
    let of = |s| n.by_state.iter().find(|(k, _)| *k == s).unwrap().1;
    assert_eq!(
        (
            of(JobState::Succeeded),
            of(JobState::Dead),
            of(JobState::Skipped),
            of(JobState::Queued)
        ),
        (1, 1, 1, 0)
    );
    assert_eq!(n.lease_losses, 1);
    assert_eq!(n.attempts, 4, "a:1, b:1 (reset by retry), d:2");
    assert!(q.get(9_999_999).unwrap().is_none());
}
