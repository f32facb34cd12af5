//! What `-r` names, in skopeo's words: a registry repository, possibly with its image
//! (`HOST/REPO`, `HOST/REPO:TAG`, `HOST/REPO@sha256:…`), an OCI image layout
//! (`oci:DIR[:TAG]`), or a tar file (`oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE[:NAME:TAG|@N]`). [`split`] separates the place from the image it
//! names, so `-i`/`-g` become optional.

/// A `-r` value split into the repository to open and the image it named, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// What [`crate::net::NetArgs::open`] opens: `HOST/REPO`, `oci:DIR`,
    /// `oci-archive:FILE`, `docker-archive:FILE`.
    pub repo: String,
    /// The tag, digest or archive image name written after the place.
    pub reference: Option<String>,
}

impl Located {
    /// True for `oci-archive:` and `docker-archive:`, which are read-only.
    pub fn is_archive(&self) -> bool {
        self.repo.starts_with("oci-archive:") || self.repo.starts_with("docker-archive:")
    }
}

/// The file transports: their prefix, then a path, then `:REFERENCE` optionally. A path that
/// exists whole (a directory named `a:b`) is taken whole.
const FILE_TRANSPORTS: [&str; 3] = ["oci:", "oci-archive:", "docker-archive:"];

/// Splits `-r`. A registry reference's tag is after the last `:` of its last path
/// component, its digest after `@`; a file transport's reference after the first `:` of the
/// path, as skopeo splits it.
pub fn split(r: &str) -> Located {
    for t in FILE_TRANSPORTS {
        if let Some(rest) = r.strip_prefix(t) {
            if std::path::Path::new(rest).exists() {
                break;
            }
            return match rest.split_once(':') {
                Some((path, reference)) if !reference.is_empty() => Located {
                    repo: format!("{t}{path}"),
                    reference: Some(reference.to_string()),
                },
                _ => Located {
                    repo: r.to_string(),
                    reference: None,
                },
            };
        }
    }
    if FILE_TRANSPORTS.iter().any(|t| r.starts_with(t)) {
        return Located {
            repo: r.to_string(),
            reference: None,
        };
    }
    if let Some((repo, digest)) = r.split_once('@') {
        return Located {
            repo: repo.to_string(),
            reference: Some(digest.to_string()),
        };
    }
    let last = r.rfind('/').map_or(0, |i| i + 1);
    match r[last..].rfind(':') {
        // As docker reads it: `name:tag` without a `/` is a Docker Hub repository and tag.
        Some(i) => Located {
            repo: r[..last + i].to_string(),
            reference: Some(r[last + i + 1..].to_string()),
        },
        _ => Located {
            repo: r.to_string(),
            reference: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(r: &str) -> (String, Option<String>) {
        let l = split(r);
        (l.repo, l.reference)
    }

    #[test]
    fn registry_references() {
        assert_eq!(s("localhost:5000/app"), ("localhost:5000/app".into(), None));
        assert_eq!(
            s("localhost:5000/ns/app:v1"),
            ("localhost:5000/ns/app".into(), Some("v1".into()))
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            s(&format!("reg.io/app@{d}")),
            ("reg.io/app".into(), Some(d.clone()))
        );
        assert_eq!(s("busybox:1.36"), ("busybox".into(), Some("1.36".into())));
        assert_eq!(s("busybox"), ("busybox".into(), None));
    }

    #[test]
    fn file_transports() {
        assert_eq!(s("oci:./lay"), ("oci:./lay".into(), None));
        assert_eq!(s("oci:./lay:v1"), ("oci:./lay".into(), Some("v1".into())));
        assert_eq!(
            s("docker-archive:/x/a.tar:busybox:latest"),
            (
                "docker-archive:/x/a.tar".into(),
                Some("busybox:latest".into())
            )
        );
        assert_eq!(
            s("docker-archive:a.tar:@1"),
            ("docker-archive:a.tar".into(), Some("@1".into()))
        );
        assert_eq!(s("oci-archive:o.tar"), ("oci-archive:o.tar".into(), None));
        assert!(split("oci-archive:o.tar").is_archive());
        assert!(!split("oci:o").is_archive());
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a:b");
        std::fs::create_dir(&odd).unwrap();
        let whole = format!("oci:{}", odd.display());
        assert_eq!(s(&whole), (whole.clone(), None));
    }
}
