//! `obdconv backfill`: jobs for what was pushed before the service listened.
//!
//! The sources are whole registries (the catalog, then each repository's tags, each tag
//! resolved to its digest with a manifest `HEAD`) and files of references (one
//! `HOST/REPO:TAG` or `HOST/REPO@DIGEST` a line, `#` starts a comment). Every reference is
//! matched against `--include`/`--exclude` globs ([`crate::rules::glob`] on
//! `HOST/REPO:TAG`), then the rules decide, exactly as for a push event
//! ([`crate::rules::job_for`]; our own output tags are never jobs). Job keys make it
//! idempotent: a second run finds every job already there and enqueues nothing.
//!
//! Failures of one reference (a tag deleted meanwhile, a bad line in a file) are counted
//! and reported while the rest go on; failures that stop everything (the catalog cannot be
//! listed, the file cannot be read, the job database is down) are a [`BackfillError`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use obd_convert::registry_store::map_err;
use obd_convert::ConvertError;
use obd_registry::{Client, Reference};

use crate::config::Config;
use crate::queue::{Queue, QueueError};
use crate::rules::{self, Ignored, Pushed};
use crate::worker::registry_client_options;

/// Where references come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Every tag of every repository in a registry's catalog.
    Registry(String),
    /// A file of references.
    File(PathBuf),
}

/// What to backfill and how.
#[derive(Clone, Debug)]
pub struct Options {
    pub sources: Vec<Source>,
    /// Only references matching one of these (all when empty).
    pub include: Vec<String>,
    /// No reference matching one of these.
    pub exclude: Vec<String>,
    /// Entries asked for per catalog or tags page.
    pub page_size: usize,
    /// Resolve and decide, but enqueue nothing.
    pub dry_run: bool,
}

/// One reference that could not be handled.
#[derive(Debug)]
pub struct ItemError {
    /// `HOST/REPO:TAG`, `HOST/REPO` (its tags could not be listed) or `FILE:LINE`.
    pub what: String,
    pub error: ConvertError,
}

/// A job backfill enqueued, or would enqueue under `--dry-run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// `HOST/REPO:TAG@DIGEST` (or `HOST/REPO@DIGEST`).
    pub source: String,
    /// `TARGET:OUTPUT_TAG`.
    pub output: String,
    /// False when the job already existed.
    pub created: bool,
}

/// What a backfill did.
#[derive(Debug, Default)]
pub struct Summary {
    /// References listed by the sources.
    pub seen: u64,
    /// Of those, the ones `--include`/`--exclude` let through.
    pub matched: u64,
    /// Jobs created.
    pub enqueued: u64,
    /// Jobs that already existed (same key).
    pub already: u64,
    /// Matched references the rules do not convert, by reason.
    pub ignored: BTreeMap<&'static str, u64>,
    pub errors: Vec<ItemError>,
    /// Every job decided on, in order (under `--dry-run`, the jobs that would be enqueued).
    pub planned: Vec<Planned>,
}

impl Summary {
    pub fn ignored_total(&self) -> u64 {
        self.ignored.values().sum()
    }

    /// The one-line report: `backfill: 500 seen, 225 matched, 225 enqueued, 0 already
    /// queued, 25 ignored (our output 25), 0 errors`.
    pub fn line(&self, dry_run: bool) -> String {
        let ignored = if self.ignored.is_empty() {
            "0 ignored".to_string()
        } else {
            let why: Vec<String> = self
                .ignored
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            format!("{} ignored ({})", self.ignored_total(), why.join(", "))
        };
        if dry_run {
            format!(
                "backfill (dry run): {} seen, {} matched, {} would be enqueued, {ignored}, {} errors",
                self.seen,
                self.matched,
                self.planned.len(),
                self.errors.len()
            )
        } else {
            format!(
                "backfill: {} seen, {} matched, {} enqueued, {} already queued, {ignored}, {} errors",
                self.seen,
                self.matched,
                self.enqueued,
                self.already,
                self.errors.len()
            )
        }
    }
}

/// Why a backfill stopped.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Nothing to read, or a bad glob or page size.
    #[error("{0}")]
    Usage(String),
    /// The registry could not be reached or its catalog listed.
    #[error(
        "listing the catalog of {host}: {source} (the catalog needs credentials allowed \
         registry:catalog:*, usually an admin's; or list the references in a --file)"
    )]
    Catalog {
        host: String,
        #[source]
        source: ConvertError,
    },
    /// The registry's client could not be set up (certificates, credential helpers).
    #[error("registry {host}: {source}")]
    Client {
        host: String,
        #[source]
        source: ConvertError,
    },
    /// A `--file` could not be read.
    #[error("cannot read --file {path}: {source}; check the path and its permissions")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The job database refused an enqueue.
    #[error("enqueueing {reference}: {source}")]
    Queue {
        reference: String,
        #[source]
        source: QueueError,
    },
}

/// A reference from a file, as parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    pub line: usize,
    pub reference: Reference,
}

/// The references of a file's text (`what` names it in errors): one a line, blank lines
/// and `#` comments skipped. A reference needs its host and a `:TAG` or `@DIGEST`.
pub fn parse_file(text: &str, what: &str) -> Vec<Result<FileRef, ItemError>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |m: String| ItemError {
            what: format!("{what}:{}", i + 1),
            error: ConvertError::Unsupported(m),
        };
        let has_host = line
            .split_once('/')
            .is_some_and(|(h, _)| h.contains('.') || h.contains(':') || h == "localhost");
        let r = match Reference::parse(line) {
            Err(e) => Err(bad(format!("{e}; write HOST/REPO:TAG or HOST/REPO@DIGEST"))),
            Ok(_) if !has_host => Err(bad(format!(
                "{line:?} names no registry host; write HOST/REPO:TAG or HOST/REPO@DIGEST"
            ))),
            Ok(r) if r.tag.is_none() && r.digest.is_none() => Err(bad(format!(
                "{line:?} has neither :TAG nor @DIGEST; write HOST/REPO:TAG or HOST/REPO@DIGEST"
            ))),
            Ok(r) => Ok(FileRef {
                line: i + 1,
                reference: r,
            }),
        };
        out.push(r);
    }
    out
}

/// Does `reference` pass `include` (any, or none given) and `exclude` (none)?
pub fn selected(include: &[String], exclude: &[String], reference: &str) -> bool {
    (include.is_empty() || include.iter().any(|g| rules::glob(g, reference)))
        && !exclude.iter().any(|g| rules::glob(g, reference))
}

fn reason(i: &Ignored) -> &'static str {
    match i {
        Ignored::NoRule => "no rule",
        Ignored::OurOutput => "our output",
        Ignored::Untagged => "untagged",
    }
}

/// A stand-in digest: rules and the loop guard do not look at the digest, so a reference
/// they ignore is never resolved.
const UNRESOLVED: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

struct Run<'a> {
    config: &'a Config,
    opts: &'a Options,
    queue: Option<&'a dyn Queue>,
    clients: HashMap<String, Client>,
    summary: Summary,
}

impl Run<'_> {
    fn client(&mut self, host: &str) -> Result<&Client, BackfillError> {
        if !self.clients.contains_key(host) {
            let c = registry_client_options(&self.config.registry(host), None)
                .and_then(|o| Client::new(host, o).map_err(map_err))
                .map_err(|source| BackfillError::Client {
                    host: host.to_string(),
                    source,
                })?;
            self.clients.insert(host.to_string(), c);
        }
        Ok(&self.clients[host])
    }

    /// One reference: filter, rules, resolve, enqueue. `digest` is known for `@DIGEST`
    /// references; an explicit digest is a job even without a tag.
    fn one(
        &mut self,
        host: &str,
        repository: &str,
        tag: Option<&str>,
        digest: Option<&str>,
    ) -> Result<(), BackfillError> {
        self.summary.seen += 1;
        let mut p = Pushed {
            host: host.to_string(),
            repository: repository.to_string(),
            digest: digest.unwrap_or(UNRESOLVED).to_string(),
            tag: tag.map(str::to_string),
        };
        let reference = p.reference();
        if !selected(&self.opts.include, &self.opts.exclude, &reference) {
            return Ok(());
        }
        self.summary.matched += 1;
        let require_tag = digest.is_none();
        if let Err(i) = rules::job_for(self.config, &p, require_tag) {
            *self.summary.ignored.entry(reason(&i)).or_default() += 1;
            return Ok(());
        }
        if digest.is_none() {
            let tag = tag.unwrap_or("latest");
            match self.resolve(host, repository, tag) {
                Ok(d) => p.digest = d,
                Err(error) => {
                    self.summary.errors.push(ItemError {
                        what: reference,
                        error,
                    });
                    return Ok(());
                }
            }
        }
        let job = match rules::job_for(self.config, &p, require_tag) {
            Ok(j) => j,
            Err(i) => {
                *self.summary.ignored.entry(reason(&i)).or_default() += 1;
                return Ok(());
            }
        };
        let source = match &p.tag {
            Some(t) => format!("{host}/{repository}:{t}@{}", p.digest),
            None => format!("{host}/{repository}@{}", p.digest),
        };
        let output = format!("{}:{}", job.target, job.output_tag);
        let created = match self.queue {
            None => true,
            Some(q) => {
                let e = q.enqueue(&job).map_err(|source| BackfillError::Queue {
                    reference: reference.clone(),
                    source,
                })?;
                if e.created {
                    self.summary.enqueued += 1;
                } else {
                    self.summary.already += 1;
                }
                e.created
            }
        };
        self.summary.planned.push(Planned {
            source,
            output,
            created,
        });
        Ok(())
    }

    /// The digest `tag` points at: the `Docker-Content-Digest` of a `HEAD`, or of the
    /// manifest itself when the registry sends none.
    fn resolve(&mut self, host: &str, repository: &str, tag: &str) -> Result<String, ConvertError> {
        let c = self.client(host).map_err(|e| match e {
            BackfillError::Client { source, .. } => source,
            other => ConvertError::Store(other.to_string()),
        })?;
        match c.head_manifest(repository, tag).map_err(map_err)? {
            Some(h) => match h.digest {
                Some(d) if d.starts_with("sha256:") => Ok(d),
                _ => Ok(c.get_manifest(repository, tag).map_err(map_err)?.digest),
            },
            None => Err(ConvertError::NotFound(format!(
                "manifest {host}/{repository}:{tag}: no such tag (deleted meanwhile, or a typo)"
            ))),
        }
    }

    fn registry(&mut self, host: &str) -> Result<(), BackfillError> {
        let page = self.opts.page_size;
        let repos = self
            .client(host)?
            .catalog(page)
            .map_err(|e| BackfillError::Catalog {
                host: host.to_string(),
                source: map_err(e),
            })?;
        for repo in repos {
            let tags = match self.client(host)?.list_tags_paged(&repo, page) {
                Ok(t) => t,
                Err(e) => {
                    self.summary.errors.push(ItemError {
                        what: format!("{host}/{repo}"),
                        error: map_err(e),
                    });
                    continue;
                }
            };
            for tag in tags {
                self.one(host, &repo, Some(&tag), None)?;
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &std::path::Path) -> Result<(), BackfillError> {
        let text = std::fs::read_to_string(path).map_err(|source| BackfillError::File {
            path: path.display().to_string(),
            source,
        })?;
        for r in parse_file(&text, &path.display().to_string()) {
            match r {
                Err(e) => self.summary.errors.push(e),
                Ok(FileRef { reference: r, .. }) => {
                    let host = r.registry.clone();
                    self.one(&host, &r.repository, r.tag.as_deref(), r.digest.as_deref())?
                }
            }
        }
        Ok(())
    }
}

/// Backfills `opts.sources` into `queue` (`None` under `--dry-run`: nothing is enqueued).
pub fn run(
    config: &Config,
    queue: Option<&dyn Queue>,
    opts: &Options,
) -> Result<Summary, BackfillError> {
    if opts.sources.is_empty() {
        return Err(BackfillError::Usage(
            "nothing to backfill: give --registry HOST (its whole catalog) or --file FILE \
             (one HOST/REPO:TAG or HOST/REPO@DIGEST a line)"
                .into(),
        ));
    }
    if opts.page_size == 0 {
        return Err(BackfillError::Usage(
            "--page-size must be at least 1".into(),
        ));
    }
    let mut run = Run {
        config,
        opts,
        queue: if opts.dry_run { None } else { queue },
        clients: HashMap::new(),
        summary: Summary::default(),
    };
    for s in &opts.sources {
        match s {
            Source::Registry(h) => run.registry(h)?,
            Source::File(p) => run.file(p)?,
        }
    }
    Ok(run.summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::sqlite::SqliteQueue;
    use obd_registry::testutil::{RegistryKind, TestRegistry};
    use obd_registry::{sha256_digest, OCI_MANIFEST};

    #[test]
    fn files_parse_with_comments_and_errors() {
        let text = "# images\n\nreg.io:5000/apps/web:v1   # the web\nreg.io/a@sha256:\
                    0000000000000000000000000000000000000000000000000000000000000001\n\
                    apps/web:v1\nreg.io/apps/web\nreg.io/Bad:v1\n";
        let got = parse_file(text, "refs.txt");
        assert_eq!(got.len(), 5);
        let ok: Vec<&FileRef> = got.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].line, 3);
        assert_eq!(ok[0].reference.registry, "reg.io:5000");
        assert_eq!(ok[0].reference.tag.as_deref(), Some("v1"));
        assert!(ok[1].reference.digest.is_some());
        let errs: Vec<String> = got
            .iter()
            .filter_map(|r| r.as_ref().err())
            .map(|e| format!("{}: {}", e.what, e.error))
            .collect();
        assert!(errs[0].starts_with("refs.txt:5: ") && errs[0].contains("no registry host"));
        assert!(errs[1].starts_with("refs.txt:6: ") && errs[1].contains("neither :TAG"));
        assert!(errs[2].starts_with("refs.txt:7: ") && errs[2].contains("lowercase"));
    }

    #[test]
    fn include_and_exclude() {
        let inc = vec!["h/apps/*".to_string()];
        let exc = vec!["*:skip*".to_string()];
        assert!(selected(&inc, &exc, "h/apps/a:v1"));
        assert!(!selected(&inc, &exc, "h/apps/a:skip1"));
        assert!(!selected(&inc, &exc, "h/libs/a:v1"));
        assert!(selected(&[], &[], "anything"));
        assert!(!selected(&[], &exc, "h/x:skip"));
    }

    #[test]
    fn a_registry_then_again_enqueues_nothing() {
        let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
            return;
        };
        let c = reg.client();
        let config_blob =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let mut digests = HashMap::new();
        for repo in ["apps/a", "apps/b", "libs/c"] {
            let (cfg, _) = c.push_blob_bytes(repo, config_blob.to_vec()).unwrap();
            let m = format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":{}}},"layers":[],"annotations":{{"repo":"{repo}"}}}}"#,
                config_blob.len()
            );
            for t in ["v1", "v2", "v1_obd"] {
                c.put_manifest(repo, t, OCI_MANIFEST, m.as_bytes()).unwrap();
            }
            digests.insert(repo, sha256_digest(m.as_bytes()));
        }
        let mut config = Config::default();
        config.registries.push(crate::config::RegistryConfig {
            host: reg.host.clone(),
            plain: true,
            ..Default::default()
        });
        let dir = tempfile::tempdir().unwrap();
        let q = SqliteQueue::open(dir.path().join("q.sqlite")).unwrap();
        let opts = Options {
            sources: vec![Source::Registry(reg.host.clone())],
            include: vec![format!("{}/apps/*", reg.host)],
            exclude: vec!["*:v2".into()],
            page_size: 2,
            dry_run: false,
        };
        let s = run(&config, Some(&q), &opts).unwrap();
        assert_eq!((s.seen, s.matched, s.enqueued, s.already), (9, 4, 2, 0));
        assert_eq!(s.ignored.get("our output"), Some(&2));
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        let jobs = q.list(None, 100).unwrap();
        let mut got: Vec<(String, String, Option<String>)> = jobs
            .iter()
            .map(|j| (j.repository.clone(), j.digest.clone(), j.tag.clone()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (
                    "apps/a".into(),
                    digests["apps/a"].clone(),
                    Some("v1".into())
                ),
                (
                    "apps/b".into(),
                    digests["apps/b"].clone(),
                    Some("v1".into())
                ),
            ]
        );
        let again = run(&config, Some(&q), &opts).unwrap();
        assert_eq!((again.enqueued, again.already), (0, 2));
        assert!(again.line(false).contains(" 0 enqueued, 2 already queued"));

        // Dry run: nothing written, the plan listed.
        let dir2 = tempfile::tempdir().unwrap();
        let q2 = SqliteQueue::open(dir2.path().join("q.sqlite")).unwrap();
        let dry = run(
            &config,
            Some(&q2),
            &Options {
                dry_run: true,
                ..opts
            },
        )
        .unwrap();
        assert_eq!(dry.planned.len(), 2);
        assert!(q2.list(None, 10).unwrap().is_empty());

        // No catalog: a typed error naming the host and what to do.
        let e = run(
            &config,
            Some(&q),
            &Options {
                sources: vec![Source::Registry("127.0.0.1:1".into())],
                include: vec![],
                exclude: vec![],
                page_size: 5,
                dry_run: false,
            },
        )
        .unwrap_err();
        assert!(matches!(e, BackfillError::Catalog { .. }), "{e}");
        assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    }
}
