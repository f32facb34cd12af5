//! The top level of a conversion: resolve the source reference, convert a manifest or every
//! platform of an index (concurrently, bounded), rebuild the index, push it, and only then
//! move the target tag. Nothing is tagged when anything failed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::dedup::DedupHandle;
use crate::error::{ConvertError, Result};
use crate::image::{self, Kind};
use crate::native::{self, NativeOptions};
use crate::report::{CpuSeconds, LayerReport, ManifestReport, Totals};
use crate::store::{Desc, Store};

/// Which kind of image to build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// Native overlaybd layers (ext4 in LSMT/ZFile blobs).
    #[default]
    Native,
    /// TurboOCIv1: fs metadata of `fstype` pointing into the original layers.
    Turbo { fstype: String },
}

/// Options of a conversion.
#[derive(Clone, Debug)]
pub struct ConvertOptions {
    pub native: NativeOptions,
    /// Work directory root; each manifest gets its own sub-directory.
    pub work_dir: PathBuf,
    /// Platform manifests converted at once (0 = unlimited).
    pub concurrency: usize,
    /// Convert only these platforms (`os/arch[/variant]`); empty = all.
    pub platforms: Vec<String>,
    /// Reuse of earlier conversions (native engine only).
    pub dedup: DedupHandle,
    pub engine: Engine,
}

/// What a conversion did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConvertReport {
    pub source: String,
    pub target: String,
    pub source_digest: String,
    pub output_digest: String,
    pub output_media_type: String,
    pub manifests: Vec<ManifestReport>,
    pub skipped: Vec<String>,
    pub totals: Totals,
    pub seconds: f64,
    /// CPU seconds per stage while this conversion ran (of the whole process: conversions
    /// running beside it in the same process are counted too).
    pub cpu_seconds: CpuSeconds,
}

/// How an image is written: `repo:tag`, `repo@sha256:…`, or just `repo` (an archive's only
/// image).
pub fn image_ref(repo: &str, reference: &str) -> String {
    if reference.is_empty() {
        repo.to_string()
    } else if crate::digest::valid(reference) {
        format!("{repo}@{reference}")
    } else {
        format!("{repo}:{reference}")
    }
}

/// Converts `reference` of `src` and tags the result `target_tag` in `dst`.
pub fn convert(
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    reference: &str,
    target_tag: &str,
    opts: &ConvertOptions,
) -> Result<ConvertReport> {
    let t0 = Instant::now();
    let cpu0 = obd_meter::totals();
    let desc = src.resolve(reference)?;
    let report = Mutex::new(ConvertReport {
        source: image_ref(&src.name(), reference),
        target: format!("{}:{target_tag}", dst.name()),
        source_digest: desc.digest.clone(),
        ..Default::default()
    });
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let ctx = Ctx {
        src,
        dst,
        opts,
        report: &report,
        counter: &counter,
    };
    let (out, bytes) = ctx.process(&desc, None)?;
    if !opts.native.no_upload {
        ctx.dst.tag(target_tag, &bytes, &out.media_type)?;
        tracing::info!(
            "tagged {}@{}",
            image_ref(&ctx.dst.name(), target_tag),
            out.digest
        );
    }
    let mut r = report.into_inner().unwrap_or_else(|p| p.into_inner());
    r.output_digest = out.digest;
    r.output_media_type = out.media_type;
    r.totals = Totals::of(&r.manifests);
    r.seconds = t0.elapsed().as_secs_f64();
    r.cpu_seconds = CpuSeconds::of(&obd_meter::totals().since(&cpu0));
    Ok(r)
}

/// A converted manifest or index: its descriptor and bytes.
type Converted = Result<(Desc, Vec<u8>)>;

struct Ctx<'a> {
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    opts: &'a ConvertOptions,
    report: &'a Mutex<ConvertReport>,
    counter: &'a std::sync::atomic::AtomicUsize,
}

impl Ctx<'_> {
    fn process(&self, desc: &Desc, platform: Option<String>) -> Result<(Desc, Vec<u8>)> {
        let bytes = self.src.fetch_manifest(desc)?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ConvertError::BadInput(format!("{}: {e}", desc.digest)))?;
        let mt = if desc.media_type.is_empty() {
            v["mediaType"].as_str().unwrap_or_default().to_string()
        } else {
            desc.media_type.clone()
        };
        match image::kind_of(&mt, Some(&v))? {
            Kind::Manifest => self.manifest(desc, platform),
            Kind::Index => self.index(desc, &mt, v),
        }
    }

    fn manifest(&self, desc: &Desc, platform: Option<String>) -> Result<(Desc, Vec<u8>)> {
        let id = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let work = self.opts.work_dir.join(format!(
            "{id}-{}-{}",
            platform.as_deref().unwrap_or("").replace('/', "_"),
            crate::digest::hex_of(&desc.digest)
        ));
        let label = platform
            .clone()
            .unwrap_or_else(|| crate::digest::hex_of(&desc.digest)[..12].to_string());
        let dedup = match self.opts.engine {
            Engine::Native => self.opts.dedup.0.clone(),
            Engine::Turbo { .. } => std::sync::Arc::new(crate::dedup::NoDedup),
        };
        if let Some(out) = dedup.find_manifest(&desc.digest) {
            if let Ok(bytes) = self.dst.fetch_manifest(&out) {
                tracing::info!("{label}: reusing converted manifest {} (dedup)", out.digest);
                let rep = self.reused_manifest(desc, &out, &bytes, platform);
                self.report
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .manifests
                    .push(rep);
                return Ok((out, bytes));
            }
        }
        let r = match &self.opts.engine {
            Engine::Native => native::convert_manifest(
                self.src.clone(),
                self.dst.clone(),
                desc,
                &work,
                &self.opts.native,
                &label,
                dedup.clone(),
            ),
            Engine::Turbo { fstype } => crate::turbo::convert_manifest(
                self.src.clone(),
                self.dst.clone(),
                desc,
                &work,
                &self.opts.native,
                fstype,
                &label,
            ),
        };
        if !self.opts.native.reserve {
            let _ = std::fs::remove_dir_all(&work);
        }
        let (out, bytes, mut rep) = r?;
        if !self.opts.native.no_upload {
            dedup.record_manifest(&desc.digest, &out);
        }
        rep.platform = platform;
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .manifests
            .push(rep);
        Ok((out, bytes))
    }

    /// The report of a manifest the dedup database had: its layers side by side with the
    /// source's, each a dedup hit, nothing downloaded, converted or uploaded.
    fn reused_manifest(
        &self,
        desc: &Desc,
        out: &Desc,
        bytes: &[u8],
        platform: Option<String>,
    ) -> ManifestReport {
        let layers_of = |b: &[u8]| -> Vec<Value> {
            serde_json::from_slice::<Value>(b)
                .ok()
                .and_then(|v| v["layers"].as_array().cloned())
                .unwrap_or_default()
        };
        let outs = layers_of(bytes);
        let config = serde_json::from_slice::<Value>(bytes)
            .map(|v| Desc::from_json(&v["config"]))
            .unwrap_or(Desc {
                media_type: String::new(),
                digest: String::new(),
                size: 0,
            });
        let srcs = self
            .src
            .fetch_manifest(desc)
            .map(|b| layers_of(&b))
            .unwrap_or_default();
        let layers = outs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let o = Desc::from_json(o);
                let s = srcs.get(i).map(Desc::from_json);
                LayerReport {
                    index: i,
                    source_digest: s.as_ref().map(|s| s.digest.clone()).unwrap_or_default(),
                    source_size: s.as_ref().map_or(0, |s| s.size),
                    source_media_type: s.map(|s| s.media_type).unwrap_or_default(),
                    output_digest: o.digest,
                    output_size: o.size,
                    output_media_type: o.media_type,
                    dedup_hit: true,
                    ..Default::default()
                }
            })
            .collect();
        ManifestReport {
            platform,
            source_digest: desc.digest.clone(),
            output_digest: out.digest.clone(),
            output_size: out.size,
            output_media_type: out.media_type.clone(),
            config_digest: config.digest,
            config_size: config.size,
            dedup_hit: true,
            layers,
            ..Default::default()
        }
    }

    fn index(&self, desc: &Desc, mt: &str, mut v: Value) -> Result<(Desc, Vec<u8>)> {
        let entries: Vec<Value> = v["manifests"].as_array().cloned().unwrap_or_default();
        let mut keep = Vec::new();
        let mut offered: Vec<String> = Vec::new();
        for e in entries {
            let d = e["digest"].as_str().unwrap_or_default().to_string();
            if image::is_attestation(&e) {
                tracing::warn!(
                    "skipping attestation manifest {d}: cannot be re-associated after conversion"
                );
                self.report
                    .lock()
                    .unwrap()
                    .skipped
                    .push(format!("{d} (attestation)"));
                continue;
            }
            let plat = image::platform_string(&e);
            let is_index = matches!(
                e["mediaType"].as_str(),
                Some(image::OCI_INDEX) | Some(image::DOCKER_LIST)
            );
            if !is_index {
                offered.push(plat.clone().unwrap_or_else(|| "no platform".into()));
            }
            if !self.opts.platforms.is_empty() && !is_index {
                let ok = plat
                    .as_ref()
                    .is_some_and(|p| self.opts.platforms.iter().any(|w| platform_matches(w, p)));
                if !ok {
                    tracing::info!(
                        "skipping {d} ({}): not a requested platform",
                        plat.as_deref().unwrap_or("no platform")
                    );
                    self.report.lock().unwrap().skipped.push(format!(
                        "{d} ({})",
                        plat.as_deref().unwrap_or("no platform")
                    ));
                    continue;
                }
            }
            keep.push(e);
        }
        if keep.is_empty() && !self.opts.platforms.is_empty() && !offered.is_empty() {
            return Err(ConvertError::NotFound(format!(
                "--platform {} matches no manifest of index {}; it has {}",
                self.opts.platforms.join(","),
                desc.digest,
                offered.join(", ")
            )));
        }
        if keep.is_empty() {
            return Err(ConvertError::NotFound(format!(
                "index {} has no manifest to convert",
                desc.digest
            )));
        }
        // Convert the entries, at most `concurrency` at once.
        let limit = if self.opts.concurrency == 0 {
            keep.len()
        } else {
            self.opts.concurrency
        };
        let results: Vec<Mutex<Option<Converted>>> =
            keep.iter().map(|_| Mutex::new(None)).collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..limit.min(keep.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(e) = keep.get(i) else { break };
                    let d = Desc::from_json(e);
                    let r = self.process(&d, image::platform_string(e));
                    *results[i].lock().unwrap() = Some(r);
                });
            }
        });
        let mut out_entries = Vec::new();
        for (mut e, r) in keep.into_iter().zip(results) {
            let (d, _) = r.into_inner().unwrap().expect("every entry ran")?;
            // Keep every field of the entry (platform, annotations, ...), new content only.
            e["mediaType"] = Value::String(d.media_type);
            e["digest"] = Value::String(d.digest);
            e["size"] = Value::from(d.size);
            out_entries.push(e);
        }
        v["manifests"] = Value::Array(out_entries);
        let out_mt = if self.opts.native.flavor.oci {
            image::OCI_INDEX.to_string()
        } else {
            mt.to_string()
        };
        if v.get("mediaType").is_some() || self.opts.native.flavor.oci {
            v["mediaType"] = Value::String(out_mt.clone());
        }
        if self.opts.native.referrer {
            let at = match self.opts.engine {
                Engine::Native => image::ARTIFACT_NATIVE,
                Engine::Turbo { .. } => image::ARTIFACT_TURBO,
            };
            v["artifactType"] = Value::String(at.into());
            v["subject"] = desc.to_json();
        }
        let bytes = serde_json::to_vec(&v).expect("serialises");
        let d = Desc {
            media_type: out_mt,
            digest: crate::digest::sha256(&bytes),
            size: bytes.len() as u64,
        };
        if !self.opts.native.no_upload {
            self.dst.push_manifest(&bytes, &d.media_type)?;
            tracing::info!("index uploaded, {}", d.digest);
        }
        Ok((d, bytes))
    }
}

/// `linux/arm64` matches `linux/arm64/v8`; a variant in the request must match exactly.
fn platform_matches(want: &str, have: &str) -> bool {
    want == have
        || (want.matches('/').count() == 1
            && have.starts_with(want)
            && have[want.len()..].starts_with('/'))
}

/// Layer annotations that only converted images carry (native and TurboOCI).
const CONVERTED_ANNOTATION: &str = "containerd.io/snapshot/overlaybd/version";

/// What an already-converted source is: `Some("overlaybd")` or `Some("TurboOCIv1")` when a
/// manifest of `reference` (an index's children too) has layers carrying the overlaybd
/// annotations, `None` for an ordinary image. Reads manifests only.
pub fn already_converted(src: &dyn Store, reference: &str) -> Result<Option<&'static str>> {
    let desc = src.resolve(reference)?;
    let mut todo = vec![desc];
    let mut seen = 0;
    while let Some(d) = todo.pop() {
        seen += 1;
        if seen > 1024 {
            break;
        }
        let bytes = src.fetch_manifest(&d)?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ConvertError::BadInput(format!("{}: {e}", d.digest)))?;
        if let Some(children) = v["manifests"].as_array() {
            todo.extend(
                children
                    .iter()
                    .filter(|c| !image::is_attestation(c))
                    .map(Desc::from_json),
            );
            continue;
        }
        for l in v["layers"].as_array().into_iter().flatten() {
            if let Some(ver) = l["annotations"][CONVERTED_ANNOTATION].as_str() {
                return Ok(Some(if ver.contains("turbo") {
                    "TurboOCIv1"
                } else {
                    "overlaybd"
                }));
            }
        }
    }
    Ok(None)
}
