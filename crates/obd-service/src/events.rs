//! What registries send: CNCF distribution notifications (registry 2.x envelopes of several
//! events, `application/vnd.docker.distribution.events.v1+json`; registry 3.x, one event
//! per request with the v2 media type, bare or in an envelope) and Harbor's
//! `PUSH_ARTIFACT` webhook. Each becomes the pushed images it reports; everything else in
//! them (pulls, deletes, blob pushes) is counted and ignored.

use serde_json::Value;

use crate::rules::Pushed;

/// Why a body cannot be read at all (answered 400: the sender's retries would not help).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadEvent(pub String);

/// Images a body reports, and how many of its events were not manifest pushes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    pub pushed: Vec<Pushed>,
    pub ignored: usize,
}

const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
];

fn json(body: &[u8]) -> Result<Value, BadEvent> {
    serde_json::from_slice(body).map_err(|e| BadEvent(format!("the body is not JSON: {e}")))
}

/// `host[:port]` of a URL such as `http://127.0.0.1:5000/v2/app/manifests/sha256:…`.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| host.to_string())
}

/// Distribution notifications, v1 (envelope) or v2 (one event, or an envelope of one).
pub fn distribution(body: &[u8]) -> Result<Parsed, BadEvent> {
    let v = json(body)?;
    let events: Vec<Value> = match (v.get("events"), v.get("action")) {
        (Some(Value::Array(a)), _) => a.clone(),
        (None, Some(_)) => vec![v],
        _ => {
            return Err(BadEvent(
                "not a distribution notification: no \"events\" array and no \"action\"".into(),
            ))
        }
    };
    let mut out = Parsed::default();
    for e in events {
        let t = &e["target"];
        let media_type = t["mediaType"].as_str().unwrap_or_default();
        let digest = t["digest"].as_str().unwrap_or_default();
        let repository = t["repository"].as_str().unwrap_or_default();
        let host = e["request"]["host"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .or_else(|| t["url"].as_str().and_then(url_host));
        match (e["action"].as_str(), host) {
            (Some("push"), Some(host))
                if MANIFEST_TYPES.contains(&media_type)
                    && digest.starts_with("sha256:")
                    && !repository.is_empty() =>
            {
                out.pushed.push(Pushed {
                    host,
                    repository: repository.to_string(),
                    digest: digest.to_string(),
                    tag: t["tag"]
                        .as_str()
                        .filter(|t| !t.is_empty())
                        .map(str::to_string),
                });
            }
            _ => out.ignored += 1,
        }
    }
    Ok(out)
}

/// Harbor's webhook (`type: PUSH_ARTIFACT`), as acceld's `/api/v1/conversions` takes it.
pub fn harbor(body: &[u8]) -> Result<Parsed, BadEvent> {
    let v = json(body)?;
    let ty = v["type"].as_str().unwrap_or_default();
    let mut out = Parsed::default();
    if !ty.eq_ignore_ascii_case("PUSH_ARTIFACT") {
        if ty.is_empty() {
            return Err(BadEvent("not a Harbor webhook: no \"type\"".into()));
        }
        out.ignored += 1;
        return Ok(out);
    }
    let data = &v["event_data"];
    let repo = data["repository"]["repo_full_name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            let ns = data["repository"]["namespace"].as_str()?;
            let name = data["repository"]["name"].as_str()?;
            Some(format!("{ns}/{name}"))
        });
    for r in data["resources"].as_array().into_iter().flatten() {
        let digest = r["digest"].as_str().unwrap_or_default();
        let url = r["resource_url"].as_str().unwrap_or_default();
        match (url_host(url), &repo) {
            (Some(host), Some(repo)) if digest.starts_with("sha256:") => out.pushed.push(Pushed {
                host,
                repository: repo.clone(),
                digest: digest.to_string(),
                tag: r["tag"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            }),
            _ => out.ignored += 1,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:4cbdca2e5d4b8c4b0f7c1b0b3a7c5a4e2b1f0e9d8c7b6a5f4e3d2c1b0a998877";

    fn event(action: &str, mt: &str, tag: Option<&str>) -> Value {
        let mut target = serde_json::json!({
            "mediaType": mt, "digest": D, "size": 528, "repository": "apps/web",
            "url": format!("http://127.0.0.1:5000/v2/apps/web/manifests/{D}"),
        });
        if let Some(t) = tag {
            target["tag"] = t.into();
        }
        serde_json::json!({"id": "1", "action": action, "target": target,
            "request": {"host": "127.0.0.1:5000", "method": "PUT"}})
    }

    #[test]
    fn distribution_v1_envelope_v2_single_and_v2_envelope() {
        let env = serde_json::json!({"events": [
            event("push", MANIFEST_TYPES[0], Some("v1")),
            event("pull", MANIFEST_TYPES[0], Some("v1")),
            event("push", "application/octet-stream", None),
            event("push", MANIFEST_TYPES[3], None),
        ]});
        let p = distribution(env.to_string().as_bytes()).unwrap();
        assert_eq!(p.pushed.len(), 2);
        assert_eq!(p.ignored, 2);
        assert_eq!(p.pushed[0].tag.as_deref(), Some("v1"));
        assert_eq!(p.pushed[0].host, "127.0.0.1:5000");
        assert_eq!(p.pushed[1].tag, None);
        let one = event("push", MANIFEST_TYPES[2], Some("v2"));
        assert_eq!(
            distribution(one.to_string().as_bytes())
                .unwrap()
                .pushed
                .len(),
            1
        );
        let env1 = serde_json::json!({"events": [one]});
        assert_eq!(
            distribution(env1.to_string().as_bytes())
                .unwrap()
                .pushed
                .len(),
            1
        );
        assert!(distribution(b"{}").is_err());
        assert!(distribution(b"nope").is_err());
    }

    #[test]
    fn harbor_push_artifact() {
        let body = serde_json::json!({
            "type": "PUSH_ARTIFACT", "occur_at": 1700000000, "operator": "admin",
            "event_data": {
                "resources": [{"digest": D, "tag": "v1",
                    "resource_url": "harbor.example.com/library/web:v1"}],
                "repository": {"name": "web", "namespace": "library",
                    "repo_full_name": "library/web", "repo_type": "private"}
            }
        });
        let p = harbor(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            p.pushed,
            vec![Pushed {
                host: "harbor.example.com".into(),
                repository: "library/web".into(),
                digest: D.into(),
                tag: Some("v1".into()),
            }]
        );
        let other = serde_json::json!({"type": "DELETE_ARTIFACT", "event_data": {}});
        assert_eq!(harbor(other.to_string().as_bytes()).unwrap().ignored, 1);
    }
}
