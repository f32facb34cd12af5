//! obd-check: checks a converted overlaybd image against its source image without
//! mounting anything.
//!
//! For every platform (source and converted manifests paired by `os/arch[/variant]`), the
//! merged source root filesystem is computed from the layer tars ([`source`]) while the
//! converted layers are fetched, stacked and their filesystem walked ([`converted`]: ext4
//! of native and TurboOCI images; [`erofs`]: EROFS fs-meta of TurboOCI images); both are
//! reduced to the entry model of [`tree`] (source times clamped to what the converted
//! filesystem stores) and compared by [`compare`], which also holds the rules for what is
//! ignored.
//!
//! ```no_run
//! # fn main() -> Result<(), obd_check::CheckError> {
//! use obd_convert::store::OciLayout;
//! let s = OciLayout::open("src-layout", false)?;
//! let c = OciLayout::open("obd-layout", false)?;
//! let r = obd_check::check(&s, "v1", &c, "v1-obd", &obd_check::CheckOptions::default())?;
//! println!("{}", r.summary());
//! # Ok(()) }
//! ```

pub mod compare;
pub mod converted;
pub mod erofs;
pub mod error;
pub mod source;
pub mod tree;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use obd_convert::image::{self, Kind};
use obd_convert::store::{Desc, Store};
use serde::Serialize;
use serde_json::Value;

pub use compare::{Difference, What};
pub use error::{CheckError, Result};

/// Options of a check.
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Check only these platforms (`os/arch[/variant]`; `linux/arm64` matches
    /// `linux/arm64/v8`). Empty: every platform of the source must be in the converted image.
    pub platforms: Vec<String>,
    /// Where converted layers are downloaded (a temporary directory is made inside);
    /// `None`: the system temporary directory.
    pub work_dir: Option<PathBuf>,
}

/// The result for one pair of manifests.
#[derive(Clone, Debug, Serialize)]
pub struct PlatformReport {
    pub platform: Option<String>,
    pub source_digest: String,
    pub converted_digest: String,
    /// Paths compared (the union of both sides, ignored ones excluded).
    pub entries: usize,
    pub differences: Vec<Difference>,
    pub seconds: f64,
}

/// The result of a check.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub platforms: Vec<PlatformReport>,
    /// Platforms present on one side only.
    pub unpaired: Vec<Difference>,
}

impl Report {
    /// True when nothing differs.
    pub fn identical(&self) -> bool {
        self.unpaired.is_empty() && self.platforms.iter().all(|p| p.differences.is_empty())
    }

    /// Every difference, platform-level ones first.
    pub fn differences(&self) -> impl Iterator<Item = &Difference> {
        self.unpaired
            .iter()
            .chain(self.platforms.iter().flat_map(|p| p.differences.iter()))
    }

    /// Human-readable: per platform `identical: N entries` or its differences.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for d in &self.unpaired {
            let _ = writeln!(s, "{d}");
        }
        for p in &self.platforms {
            let prefix = p
                .platform
                .as_deref()
                .map(|p| format!("{p}: "))
                .unwrap_or_default();
            if p.differences.is_empty() {
                let _ = writeln!(s, "{prefix}identical: {} entries", p.entries);
            } else {
                let _ = writeln!(
                    s,
                    "{prefix}{} difference(s) in {} entries:",
                    p.differences.len(),
                    p.entries
                );
                for d in &p.differences {
                    let _ = writeln!(s, "  {d}");
                }
            }
        }
        s
    }
}

/// One image manifest of an image (a platform of an index, or the image itself).
#[derive(Clone, Debug)]
struct Target {
    platform: Option<String>,
    desc: Desc,
    manifest: Value,
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| CheckError::BadInput(format!("{what}: {e}")))
}

/// The platform named by an image config.
fn config_platform(store: &dyn Store, m: &Value) -> Result<Option<String>> {
    let Some(d) = m["config"]["digest"].as_str() else {
        return Ok(None);
    };
    let mut b = Vec::new();
    std::io::Read::read_to_end(&mut store.fetch_blob(d)?, &mut b)
        .map_err(|e| CheckError::io(format!("reading config {d}"), e))?;
    let v = parse_json(&b, &format!("config {d}"))?;
    let (Some(os), Some(arch)) = (v["os"].as_str(), v["architecture"].as_str()) else {
        return Ok(None);
    };
    let mut p = format!("{os}/{arch}");
    if let Some(var) = v["variant"].as_str().filter(|s| !s.is_empty()) {
        p.push('/');
        p.push_str(var);
    }
    Ok(Some(p))
}

/// Lists the image manifests under `desc` (indexes walked recursively, attestation
/// manifests skipped).
fn collect(
    store: &dyn Store,
    desc: &Desc,
    platform: Option<String>,
    depth: usize,
    out: &mut Vec<Target>,
) -> Result<()> {
    if depth > 8 {
        return Err(CheckError::BadInput(format!(
            "indexes nested too deeply at {}",
            desc.digest
        )));
    }
    let bytes = store.fetch_manifest(desc)?;
    let v = parse_json(&bytes, &desc.digest)?;
    let mt = if desc.media_type.is_empty() {
        v["mediaType"].as_str().unwrap_or_default().to_string()
    } else {
        desc.media_type.clone()
    };
    match image::kind_of(&mt, Some(&v))? {
        Kind::Manifest => {
            let platform = match platform {
                Some(p) => Some(p),
                None => config_platform(store, &v)?,
            };
            out.push(Target {
                platform,
                desc: desc.clone(),
                manifest: v,
            });
        }
        Kind::Index => {
            for e in v["manifests"].as_array().cloned().unwrap_or_default() {
                if image::is_attestation(&e) {
                    continue;
                }
                collect(
                    store,
                    &Desc::from_json(&e),
                    image::platform_string(&e),
                    depth + 1,
                    out,
                )?;
            }
        }
    }
    Ok(())
}

/// `linux/arm64` matches `linux/arm64/v8`; a variant in the request must match exactly.
pub fn platform_matches(want: &str, have: &str) -> bool {
    want == have
        || (want.matches('/').count() == 1
            && have.starts_with(want)
            && have[want.len()..].starts_with('/'))
}

/// Checks `converted_ref` of `converted` against `source_ref` of `source`.
pub fn check(
    source: &dyn Store,
    source_ref: &str,
    converted: &dyn Store,
    converted_ref: &str,
    opts: &CheckOptions,
) -> Result<Report> {
    let mut srcs = Vec::new();
    collect(source, &source.resolve(source_ref)?, None, 0, &mut srcs)?;
    let mut convs = Vec::new();
    collect(
        converted,
        &converted.resolve(converted_ref)?,
        None,
        0,
        &mut convs,
    )?;
    let wanted = |t: &Target| {
        opts.platforms.is_empty()
            || t.platform
                .as_deref()
                .is_some_and(|p| opts.platforms.iter().any(|w| platform_matches(w, p)))
    };
    srcs.retain(wanted);
    convs.retain(wanted);
    if srcs.is_empty() && convs.is_empty() {
        return Err(CheckError::NotFound(format!(
            "no manifest for platform(s) {:?}",
            opts.platforms
        )));
    }
    // Pair by platform, in source order; a lone manifest on each side pairs as is.
    let mut pairs = Vec::new();
    let mut unpaired = Vec::new();
    if srcs.len() == 1 && convs.len() == 1 {
        pairs.push((srcs.remove(0), convs.remove(0)));
    } else {
        for s in srcs {
            match convs.iter().position(|c| c.platform == s.platform) {
                Some(i) => pairs.push((s, convs.remove(i))),
                None => unpaired.push(Difference {
                    path: s.platform.clone().unwrap_or_else(|| "(no platform)".into()),
                    what: What::PlatformMissing,
                    source: Some(s.desc.digest.clone()),
                    converted: None,
                }),
            }
        }
    }
    for c in convs {
        unpaired.push(Difference {
            path: c.platform.clone().unwrap_or_else(|| "(no platform)".into()),
            what: What::PlatformExtra,
            source: None,
            converted: Some(c.desc.digest.clone()),
        });
    }
    let mut platforms = Vec::new();
    for (s, c) in pairs {
        platforms.push(check_pair(source, &s, converted, &c, opts)?);
    }
    Ok(Report {
        platforms,
        unpaired,
    })
}

/// The merged source tree of a manifest, its layers streamed from `store`.
pub fn source_tree(store: &dyn Store, m: &Value) -> Result<tree::Tree> {
    let layers = m["layers"]
        .as_array()
        .ok_or_else(|| CheckError::BadInput("source manifest has no layers".into()))?;
    let mut t = source::SourceTree::new();
    for (i, l) in layers.iter().enumerate() {
        let d = l["digest"].as_str().unwrap_or_default();
        if !obd_convert::digest::valid(d) {
            return Err(CheckError::BadInput(format!(
                "source layer {i} has an invalid digest {d:?}"
            )));
        }
        let r = store.fetch_blob(d)?;
        t.apply_layer(r).map_err(|e| match e {
            CheckError::BadInput(m) => CheckError::BadInput(format!("source layer {i} ({d}): {m}")),
            CheckError::Io { context, source } => CheckError::Io {
                context: format!("source layer {i} ({d}): {context}"),
                source,
            },
            CheckError::Tar { context, source } => CheckError::Tar {
                context: format!("source layer {i} ({d}): {context}"),
                source,
            },
            other => other,
        })?;
    }
    Ok(t.into_tree())
}

/// The tree of a converted manifest, its layers fetched into a temporary directory under
/// `work_dir`, and the type of its filesystem.
pub fn converted_tree(
    store: &dyn Store,
    m: &Value,
    work_dir: Option<&std::path::Path>,
) -> Result<(tree::Tree, converted::FsType)> {
    let base = work_dir
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)
        .map_err(|e| CheckError::io(format!("creating {}", base.display()), e))?;
    let work = tempfile::Builder::new()
        .prefix("obd-check-")
        .tempdir_in(&base)
        .map_err(|e| CheckError::io(format!("creating a work dir in {}", base.display()), e))?;
    let mut fs = converted::open_fs(store, m, work.path())?;
    Ok((fs.walk()?, fs.fs_type()))
}

fn check_pair(
    source: &dyn Store,
    s: &Target,
    converted: &dyn Store,
    c: &Target,
    opts: &CheckOptions,
) -> Result<PlatformReport> {
    let t0 = Instant::now();
    // The source is streamed on one thread while the converted layers are fetched and
    // walked on this one.
    let (st, ct) = std::thread::scope(|sc| {
        let h = sc.spawn(|| source_tree(source, &s.manifest));
        let ct = converted_tree(converted, &c.manifest, opts.work_dir.as_deref());
        let st = h
            .join()
            .unwrap_or_else(|_| Err(CheckError::BadInput("the source thread panicked".into())));
        (st, ct)
    });
    let (mut st, (ct, fs)) = (st?, ct?);
    st.clamp_mtimes(fs.mtime_range());
    let differences = compare::compare(&st, &ct);
    let lf_ignored = !st.entries.contains_key(b"/lost+found".as_slice());
    let entries = st
        .entries
        .keys()
        .chain(ct.entries.keys().filter(|p| !st.entries.contains_key(*p)))
        .filter(|p| {
            !(lf_ignored && (p.as_slice() == b"/lost+found" || p.starts_with(b"/lost+found/")))
        })
        .count();
    let r = PlatformReport {
        platform: s.platform.clone().or_else(|| c.platform.clone()),
        source_digest: s.desc.digest.clone(),
        converted_digest: c.desc.digest.clone(),
        entries,
        differences,
        seconds: t0.elapsed().as_secs_f64(),
    };
    tracing::info!(
        "{}: {} entries, {} difference(s), {:.2}s",
        r.platform.as_deref().unwrap_or("image"),
        r.entries,
        r.differences.len(),
        r.seconds
    );
    Ok(r)
}
