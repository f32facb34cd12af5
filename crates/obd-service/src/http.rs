//! The HTTP side of `obdconv serve`: event ingest, the jobs API, probes and metrics.
//!
//! | method and path | auth | what |
//! |---|---|---|
//! | `POST /v1/events/distribution` | bearer | registry notifications (v1 envelopes, v2 events) |
//! | `POST /v1/events/harbor`, `POST /api/v1/conversions` | bearer | Harbor `PUSH_ARTIFACT` |
//! | `POST /v1/jobs` `{"source": "HOST/REPO:TAG"\|"HOST/REPO@DIGEST"}` | bearer | enqueue by hand |
//! | `GET /v1/jobs[?state=S]`, `GET /v1/jobs/{id}` | bearer | jobs as JSON |
//! | `POST /v1/jobs/{id}/retry` | bearer | run a finished job again |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | none | probes (up/down only), Prometheus |
//!
//! An event is answered 2xx only after its job rows are committed; 503 when the database
//! does not answer (the registry retries); 2xx with no job for events that match no rule,
//! so the registry's queue never stalls on them. The token is compared in constant time.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::events::{self, Parsed};
use crate::queue::{JobState, QueueError};
use crate::rules::{self, Ignored, Pushed};
use crate::worker::Shared;

/// Bodies larger than this are refused (413).
const MAX_BODY: u64 = 4 << 20;

/// The HTTP front end.
pub struct Api {
    pub shared: Arc<Shared>,
    /// The bearer token clients must present.
    pub token: String,
    /// Serve only `/metrics` and `/healthz` (a worker's `--metrics-listen`).
    pub metrics_only: bool,
}

type Reply = (u16, Value);

fn reply(code: u16, v: Value) -> Reply {
    (code, v)
}

fn error(code: u16, msg: impl Into<String>) -> Reply {
    (code, json!({"error": msg.into()}))
}

impl Api {
    /// Serves until `stopping` is set (polled every 200 ms), with `threads` handlers.
    pub fn serve(self: Arc<Self>, server: Arc<Server>, threads: usize) {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let (api, server) = (self.clone(), server.clone());
                std::thread::spawn(move || loop {
                    if api.shared.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    match server.recv_timeout(std::time::Duration::from_millis(200)) {
                        Ok(Some(req)) => api.handle(req),
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!("http: {e}");
                            return;
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
    }

    fn authorized(&self, req: &Request) -> bool {
        use subtle::ConstantTimeEq;
        let Some(h) = req
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
        else {
            return false;
        };
        let v = h.value.as_str();
        let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        else {
            return false;
        };
        let (a, b) = (t.trim().as_bytes(), self.token.as_bytes());
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }

    fn handle(&self, mut req: Request) {
        let method = req.method().clone();
        let url = req.url().to_string();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let path = path.to_string();
        let query = query.to_string();
        let open = matches!(
            (&method, path.as_str()),
            (Method::Get, "/healthz" | "/readyz" | "/metrics")
        );
        if path == "/metrics" && method == Method::Get {
            let counts = self.shared.queue.counts().ok();
            let text = self.shared.metrics.render(counts.as_ref());
            let ct = Header::from_bytes("Content-Type", "text/plain; version=0.0.4")
                .expect("static header");
            let _ = req.respond(Response::from_string(text).with_header(ct));
            return;
        }
        if self.metrics_only && !(method == Method::Get && path == "/healthz") {
            let ct = Header::from_bytes("Content-Type", "application/json").expect("static header");
            let _ = req.respond(
                Response::from_string(r#"{"error":"a worker serves only /metrics and /healthz"}"#)
                    .with_status_code(404)
                    .with_header(ct),
            );
            return;
        }
        let source = match path.as_str() {
            "/v1/events/distribution" => "distribution",
            "/v1/events/harbor" | "/api/v1/conversions" => "harbor",
            "/v1/jobs" => "manual",
            _ => "",
        };
        let (code, body) = if !open && !self.authorized(&req) {
            if !source.is_empty() && method == Method::Post {
                self.shared.metrics.webhook(source, "unauthorized");
            }
            error(
                401,
                "missing or wrong bearer token: send Authorization: Bearer <token of --token-file>",
            )
        } else {
            let mut body = Vec::new();
            let too_big = req.body_length().is_some_and(|n| n as u64 > MAX_BODY);
            if too_big
                || req
                    .as_reader()
                    .take(MAX_BODY + 1)
                    .read_to_end(&mut body)
                    .is_err()
                || body.len() as u64 > MAX_BODY
            {
                error(413, "the body is larger than 4 MiB")
            } else {
                self.route(&method, &path, &query, &body)
            }
        };
        if !source.is_empty() && method == Method::Post && code != 401 {
            let outcome = match code {
                200..=202 => {
                    if body["jobs"].as_array().is_some_and(|j| !j.is_empty()) {
                        "accepted"
                    } else {
                        "ignored"
                    }
                }
                503 => "unavailable",
                _ => "bad_request",
            };
            self.shared.metrics.webhook(source, outcome);
        }
        let ct = Header::from_bytes("Content-Type", "application/json").expect("static header");
        let text = serde_json::to_string(&body).unwrap_or_default();
        let _ = req.respond(
            Response::from_string(text)
                .with_status_code(code)
                .with_header(ct),
        );
    }

    fn route(&self, method: &Method, path: &str, query: &str, body: &[u8]) -> Reply {
        let q = &self.shared.queue;
        match (method, path) {
            (Method::Get, "/healthz") => reply(200, json!({"status": "up"})),
            (Method::Get, "/readyz") => match q.ping() {
                Ok(()) => reply(200, json!({"status": "up"})),
                Err(_) => reply(503, json!({"status": "down"})),
            },
            (Method::Post, "/v1/events/distribution") => match events::distribution(body) {
                Ok(p) => self.enqueue_all(p, true),
                Err(e) => error(400, e.to_string()),
            },
            (Method::Post, "/v1/events/harbor" | "/api/v1/conversions") => {
                match events::harbor(body) {
                    Ok(p) => self.enqueue_all(p, true),
                    Err(e) => error(400, e.to_string()),
                }
            }
            (Method::Post, "/v1/jobs") => self.manual(body),
            (Method::Get, "/v1/jobs") => {
                let state = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("state="))
                    .filter(|s| !s.is_empty());
                let state = match state.map(|s| (s, JobState::parse(s))) {
                    Some((s, None)) => {
                        return error(
                            400,
                            format!(
                                "unknown state {s:?}: queued, running, succeeded, failed, dead or skipped"
                            ),
                        )
                    }
                    Some((_, st)) => st,
                    None => None,
                };
                match q.list(state, 1000) {
                    Ok(jobs) => reply(200, json!({"jobs": jobs})),
                    Err(e) => unavailable(e),
                }
            }
            (m, p) if p.starts_with("/v1/jobs/") => {
                let rest = &p["/v1/jobs/".len()..];
                let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
                let Ok(id) = id.parse::<i64>() else {
                    return error(404, format!("no job {id:?}"));
                };
                match (m, action) {
                    (Method::Get, "") => match q.get(id) {
                        Ok(Some(j)) => reply(200, json!(j)),
                        Ok(None) => error(404, format!("no job {id}")),
                        Err(e) => unavailable(e),
                    },
                    (Method::Post, "retry") => match q.retry(id) {
                        Ok(true) => reply(202, json!({"id": id, "state": "queued"})),
                        Ok(false) => match q.get(id) {
                            Ok(Some(j)) => error(
                                409,
                                format!("job {id} is {}: only finished jobs are retried", j.state),
                            ),
                            Ok(None) => error(404, format!("no job {id}")),
                            Err(e) => unavailable(e),
                        },
                        Err(e) => unavailable(e),
                    },
                    _ => error(404, format!("no such endpoint: {p}")),
                }
            }
            _ => error(404, format!("no such endpoint: {path}")),
        }
    }

    /// Enqueues every pushed image a rule matches; 200 with the job ids, 503 if the
    /// database fails (nothing is answered 2xx before its row is committed).
    fn enqueue_all(&self, p: Parsed, require_tag: bool) -> Reply {
        let mut jobs = Vec::new();
        let mut ignored = p.ignored;
        let mut reasons = Vec::new();
        for pushed in &p.pushed {
            match rules::job_for(&self.shared.config, pushed, require_tag) {
                Ok(j) => match self.shared.queue.enqueue(&j) {
                    Ok(e) => {
                        if e.created {
                            tracing::info!(
                                "job {} queued: {} -> {}:{}",
                                e.id,
                                pushed.reference(),
                                j.target,
                                j.output_tag
                            );
                        }
                        jobs.push(json!({"id": e.id, "created": e.created,
                            "source": pushed.reference(), "output": format!("{}:{}", j.target, j.output_tag)}));
                    }
                    Err(e) => return unavailable(e),
                },
                Err(why) => {
                    ignored += 1;
                    reasons.push(json!({"source": pushed.reference(), "ignored": match why {
                        Ignored::NoRule => "no rule matches",
                        Ignored::OurOutput => "an output tag of ours (loop guard)",
                        Ignored::Untagged => "untagged (a child of an index, or pushed by digest)",
                    }}));
                }
            }
        }
        reply(
            200,
            json!({"jobs": jobs, "ignored": ignored, "reasons": reasons}),
        )
    }

    /// `POST /v1/jobs {"source": "HOST/REPO:TAG" | "HOST/REPO@DIGEST"}`: a tag is resolved
    /// to its digest now, so the job converts what the tag named at this moment.
    fn manual(&self, body: &[u8]) -> Reply {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return error(400, format!("the body is not JSON: {e}")),
        };
        let Some(source) = v["source"].as_str() else {
            return error(
                400,
                "the body needs \"source\": \"HOST/REPO:TAG\" or \"HOST/REPO@DIGEST\"",
            );
        };
        let r = match obd_registry::Reference::parse(source) {
            Ok(r) => r,
            Err(e) => return error(400, format!("source {source:?}: {e}")),
        };
        let digest = match (&r.digest, &r.tag) {
            (Some(d), _) => d.clone(),
            (None, Some(t)) => {
                let store = match crate::worker::open_repo(
                    &self.shared.config,
                    &format!("{}/{}", r.registry, r.repository),
                ) {
                    Ok(s) => s,
                    Err(e) => return error(400, e.to_string()),
                };
                match store.resolve(t) {
                    Ok(d) => d.digest,
                    Err(obd_convert::ConvertError::NotFound(m)) => return error(404, m),
                    Err(e) => return error(502, format!("resolving {source}: {e}")),
                }
            }
            (None, None) => return error(400, format!("source {source:?} names no tag or digest")),
        };
        let p = Parsed {
            pushed: vec![Pushed {
                host: r.registry.clone(),
                repository: r.repository.clone(),
                digest,
                tag: r.tag.clone(),
            }],
            ignored: 0,
        };
        let (code, body) = self.enqueue_all(p, false);
        if code == 200 && body["jobs"].as_array().is_some_and(|j| j.is_empty()) {
            return (
                422,
                json!({"error": "no rule converts this source", "detail": body}),
            );
        }
        (if code == 200 { 202 } else { code }, body)
    }
}

fn unavailable(e: QueueError) -> Reply {
    tracing::warn!("job database: {e}");
    error(503, format!("{e}; try again"))
}
