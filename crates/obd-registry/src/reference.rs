//! Image references: `[host[:port]/]repo[:tag][@algo:hex]`.

use std::fmt;

use crate::error::{Error, Result};

/// The Docker Hub name users write.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's registry API.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference.
///
/// Normalisation follows the docker CLI: a first path component that contains neither `.`
/// nor `:` and is not `localhost` is part of the repository and the registry is
/// `docker.io`; single-component Docker Hub repositories get a `library/` prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry as written (`docker.io`, `localhost:5000`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/redis`, `team/app`).
    pub repository: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// Digest (`sha256:<hex>`), if given.
    pub digest: Option<String>,
}

fn invalid(reference: &str, reason: impl Into<String>) -> Error {
    Error::InvalidReference {
        reference: reference.to_string(),
        reason: reason.into(),
    }
}

/// Validate a `sha256:<64 hex>` (or `sha512:<128 hex>`) digest string.
pub fn validate_digest(d: &str) -> Result<()> {
    let bad = || {
        invalid(
            d,
            "digest must be sha256:<64 lowercase hex> or sha512:<128 hex>",
        )
    };
    let (algo, hex) = d.split_once(':').ok_or_else(bad)?;
    let want = match algo {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() != want
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad());
    }
    Ok(())
}

/// True for a valid tag (the distribution spec: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // a separator run
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// Validate a repository name (`a/b/c`, lowercase components).
pub fn validate_repository(repo: &str) -> Result<()> {
    if repo.is_empty() || repo.len() > 255 {
        return Err(invalid(repo, "repository name must be 1-255 characters"));
    }
    if !repo.split('/').all(valid_component) {
        return Err(invalid(
            repo,
            "repository path components must be lowercase alphanumerics separated by '.', '_', '__' or '-'",
        ));
    }
    Ok(())
}

fn looks_like_host(s: &str) -> bool {
    s.contains('.') || s.contains(':') || s == "localhost" || s.starts_with('[')
}

impl Reference {
    /// Parse `[host[:port]/]repo[:tag][@digest]`.
    pub fn parse(s: &str) -> Result<Reference> {
        if s.is_empty() {
            return Err(invalid(s, "empty reference"));
        }
        if s.contains("://") {
            return Err(invalid(s, "a reference has no URL scheme"));
        }
        if s.chars().any(|c| c.is_whitespace()) {
            return Err(invalid(s, "whitespace in reference"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(|_| invalid(s, format!("bad digest {d:?}")))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // Split off a leading host component.
        let (registry, path) = match rest.split_once('/') {
            Some((first, remainder)) if looks_like_host(first) => {
                (first.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), rest.to_string()),
        };
        if registry.is_empty() {
            return Err(invalid(s, "empty registry host"));
        }
        // The tag follows the last ':' after the last '/'.
        let last_slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (mut repository, tag) = match path[last_slash..].rfind(':') {
            Some(i) => {
                let i = last_slash + i;
                let tag = &path[i + 1..];
                if !valid_tag(tag) {
                    return Err(invalid(s, format!("bad tag {tag:?}")));
                }
                (path[..i].to_string(), Some(tag.to_string()))
            }
            None => (path.clone(), None),
        };
        let hub =
            registry == DOCKER_HUB || registry == "index.docker.io" || registry == DOCKER_HUB_API;
        if hub && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if repository.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid(s, "repository name must be lowercase"));
        }
        validate_repository(&repository).map_err(|e| match e {
            Error::InvalidReference { reason, .. } => invalid(s, reason),
            other => other,
        })?;
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host the registry API is served from (`docker.io` → `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        api_host(&self.registry)
    }

    /// The object to resolve: the digest if present, else the tag, else `latest`.
    pub fn object(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// A copy with a different tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Reference {
        Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        }
    }

    /// A copy pinned to a digest (tag kept for display).
    pub fn with_digest(&self, digest: &str) -> Reference {
        Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

/// Map a registry name to the host serving its API.
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB || registry == "index.docker.io" {
        DOCKER_HUB_API
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn docker_hub_defaults() {
        let r = Reference::parse("redis").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/redis");
        assert_eq!(r.tag, None);
        assert_eq!(r.object(), "latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = Reference::parse("library/redis:7").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/redis")
        );
        assert_eq!(r.tag.as_deref(), Some("7"));
        let r = Reference::parse("docker.io/foo/bar:1.0").unwrap();
        assert_eq!(r.repository, "foo/bar");
        assert_eq!(r.to_string(), "docker.io/foo/bar:1.0");
        assert_eq!(
            Reference::parse("docker.io/ubuntu").unwrap().repository,
            "library/ubuntu"
        );
    }

    #[test]
    fn host_port_tag_digest() {
        let r = Reference::parse("localhost:5000/a/b:v1").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.api_host(), "localhost:5000");
        let s = format!("127.0.0.1:5000/x/y:t@{D}");
        let r = Reference::parse(&s).unwrap();
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.tag.as_deref(), Some("t"));
        assert_eq!(r.object(), D);
        assert_eq!(r.to_string(), s);
        let r = Reference::parse(&format!("localhost/x@{D}")).unwrap();
        assert_eq!(r.registry, "localhost");
        assert_eq!(r.tag, None);
        let r = Reference::parse("registry.example.com/a.b/c-d__e:latest").unwrap();
        assert_eq!(r.repository, "a.b/c-d__e");
        assert_eq!(
            r.with_tag("x").to_string(),
            "registry.example.com/a.b/c-d__e:x"
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "http://host/repo:tag",
            "host:5000/Repo:tag",
            "host:5000/repo:bad/tag",
            "host:5000/repo:",
            "host:5000/repo@sha256:abc",
            "host:5000/repo@md5:d41d8cd98f00b204e9800998ecf8427e",
            "host:5000/-repo",
            "host:5000/re..po",
            "host:5000/",
            "/repo",
            "repo with space",
        ] {
            let e = Reference::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidReference { .. }), "{bad:?}: {e}");
            assert_eq!(e.exit_code(), 5);
        }
    }

    #[test]
    fn digest_validation() {
        validate_digest(D).unwrap();
        assert!(validate_digest(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
        )
        .is_err());
        assert!(validate_digest("sha256").is_err());
    }
}
