//! The native overlaybd engine for one image manifest.
//!
//! Layers are fetched (remote stores: prefetched concurrently into the work dir, digest
//! checked while downloading) and applied **in order** onto an ext4 filesystem that lives in
//! an LSMT stack: lowers are the metadata of the layers already converted, the upper a
//! [`StreamLayer`] that commits while it is written (file data goes straight through the
//! ZFile compressor into the tar-wrapped output, UUID from the chain ID; no uncompressed copy
//! touches the disk). Finished outputs are hashed and uploaded in the background while the
//! next layers are applied, then deleted. Then the config (only `rootfs.diff_ids` changed)
//! and the manifest are pushed; the tag is set by the caller's request last.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use obd_ext4::{Ext4, MkfsOptions};
use obd_format::detect;
use obd_format::lsmt::{CommitOptions, LsmtRo, RwKind, Stack, StreamLayer, StreamStack};
use obd_format::output::Wrapping;
use obd_format::uuid::Uuid;
use obd_format::zfile::ZFileOptions;
use serde_json::Value;

use crate::baselayer;
use crate::dedup::{Dedup, Reuse};
use crate::digest::{self, sha256_file};
use crate::error::{ConvertError, Result};
use crate::fetch::{self, Job, TailReader};
use crate::image::{self, Flavor};
use crate::memory::{Budget, Output, SpillFile, MEMORY_BUDGET};
use crate::progress::{CountingReader, LayerId, ProgressSink, Stage};
use crate::report::StageReport;
pub use crate::report::{LayerReport, ManifestReport};
use crate::store::{Desc, Store};
use crate::upload::{Push, Uploader};

/// Options of the native engine.
#[derive(Clone, Debug)]
pub struct NativeOptions {
    /// Make the filesystem in layer 0 (else stack on the upstream baselayer).
    pub mkfs: bool,
    /// Virtual size of the block device in GiB (with mkfs).
    pub vsize_gb: u64,
    pub flavor: Flavor,
    /// Add `subject` and `artifactType` (referrers API).
    pub referrer: bool,
    /// Writable layers without the sparse data file.
    pub disable_sparse: bool,
    pub zfile: ZFileOptions,
    /// Keep the work directory.
    pub reserve: bool,
    /// Convert but push nothing.
    pub no_upload: bool,
    /// Write the manifest and config JSON into the work dir.
    pub dump_manifest: bool,
    /// Concurrent layer downloads from remote stores.
    pub download_concurrency: usize,
    /// Bytes that downloaded-ahead layers and finished outputs waiting for their upload
    /// may hold in memory (see [`crate::memory`]); `--reserve` makes it 0.
    pub memory_budget: u64,
    /// Where progress events go.
    pub progress: ProgressSink,
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            mkfs: true,
            vsize_gb: 64,
            flavor: Flavor::default(),
            referrer: false,
            disable_sparse: false,
            zfile: ZFileOptions::default(),
            reserve: false,
            no_upload: false,
            dump_manifest: false,
            download_concurrency: 3,
            memory_budget: MEMORY_BUDGET,
            progress: ProgressSink::default(),
        }
    }
}

fn uuid_of(chain: &str) -> Result<Uuid> {
    Uuid::from_chain_id(chain)
        .ok_or_else(|| ConvertError::BadInput(format!("chain ID {chain} is not a sha256 digest")))
}

/// A layer being committed in the background.
struct CommitJob {
    index: usize,
    handle: std::thread::JoinHandle<Result<(String, u64, StageReport)>>,
}

/// State of one manifest's conversion while its layers go through.
struct Run {
    /// Lower layers: the baselayer (without mkfs), then one per source layer so far.
    lowers: Vec<Arc<LsmtRo>>,
    /// Position of source layer 0 in `lowers`.
    base: usize,
    pending: Vec<CommitJob>,
    /// Output blob per source layer, once known.
    outputs: Vec<Option<Reuse>>,
    reports: Vec<LayerReport>,
    uploader: Uploader,
    /// Layers whose blobs are in the target store, to record in the dedup database once
    /// the manifest is pushed too (a failed conversion leaves no row behind).
    uploaded_rows: Arc<std::sync::Mutex<Vec<(String, Reuse)>>>,
}

impl Run {
    /// Waits for background commits (the hashing of finished outputs, which also queue
    /// their uploads), oldest first, until at most `keep` are in flight, and records them.
    fn finish_commits(&mut self, keep: usize) -> Result<()> {
        while self.pending.len() > keep {
            let job = self.pending.remove(0);
            let i = job.index;
            let (d, size, st) = job
                .handle
                .join()
                .map_err(|_| ConvertError::Store(format!("the commit of layer {i} panicked")))??;
            let r = &mut self.reports[i];
            r.bytes_written = size;
            r.commit = Some(st);
            self.outputs[i] = Some(Reuse { digest: d, size });
        }
        Ok(())
    }
}

/// Hashes a finished layer output and queues its upload; the output is freed once it is
/// in the store (a file is kept with `--reserve`), and the layer's dedup row is kept for
/// after the manifest push.
#[allow(clippy::too_many_arguments)]
fn hash_and_queue(
    commit: Output,
    started: Instant,
    id: LayerId,
    chain: String,
    progress: ProgressSink,
    queue: Option<std::sync::mpsc::Sender<Push>>,
    rows: Arc<std::sync::Mutex<Vec<(String, Reuse)>>>,
    remove: bool,
) -> Result<(String, u64, StageReport)> {
    let (d, size) = obd_meter::charge(obd_meter::Stage::Hash, || match &commit {
        Output::File(p) => {
            sha256_file(p).map_err(|e| ConvertError::io("hashing the committed layer", e))
        }
        Output::Memory(m) => Ok((digest::sha256(m.bytes()), m.bytes().len() as u64)),
    })?;
    let st = StageReport {
        seconds: started.elapsed().as_secs_f64(),
        bytes: size,
    };
    progress.finish(&id, Stage::Commit, size, st.seconds);
    let out = Reuse {
        digest: d.clone(),
        size,
    };
    let path = commit.path().map(Path::to_path_buf);
    if let Some(q) = queue {
        let _ = q.send(Push {
            layer: Some(id),
            blob: commit,
            digest: d.clone(),
            size,
            then: Some(Box::new(move || {
                rows.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((chain, out));
                if let Some(p) = path.filter(|_| remove) {
                    let _ = std::fs::remove_file(p);
                }
            })),
        });
    }
    Ok((d, size, st))
}

/// Maps an apply error of layer `i` onto the engine's error kinds.
fn apply_error(i: usize, ldigest: &str, e: obd_tar::ApplyError) -> ConvertError {
    match e {
        obd_tar::ApplyError::Io(ioe) => match ioe.kind() {
            // Corrupt compressed data (flate2/zstd report InvalidInput) or a digest mismatch.
            std::io::ErrorKind::InvalidData
            | std::io::ErrorKind::InvalidInput
            | std::io::ErrorKind::UnexpectedEof => {
                ConvertError::BadInput(format!("layer {i} ({ldigest}): {ioe}"))
            }
            std::io::ErrorKind::NotFound => {
                ConvertError::NotFound(format!("layer {i} ({ldigest}): {ioe}"))
            }
            std::io::ErrorKind::PermissionDenied => {
                ConvertError::Auth(format!("layer {i} ({ldigest}): {ioe}"))
            }
            _ => ConvertError::io(format!("layer {i} ({ldigest})"), ioe),
        },
        other => ConvertError::from(other),
    }
}

/// The parts of a source manifest the engines need.
pub struct Source {
    pub manifest: Value,
    pub config_digest: String,
    pub config: Vec<u8>,
    /// `(digest, size, media type)` per layer.
    pub layers: Vec<(String, u64, String)>,
    pub diff_ids: Vec<String>,
    pub chain_ids: Vec<String>,
}

/// Fetches and checks a source manifest and its config.
pub fn read_source(src: &dyn Store, desc: &Desc) -> Result<Source> {
    let mbytes = src.fetch_manifest(desc)?;
    let m: Value = serde_json::from_slice(&mbytes)
        .map_err(|e| ConvertError::BadInput(format!("manifest {}: {e}", desc.digest)))?;
    let cfg_digest = m["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !digest::valid(&cfg_digest) {
        return Err(ConvertError::BadInput(format!(
            "manifest {} has an invalid config digest {cfg_digest:?}",
            desc.digest
        )));
    }
    let mut cfg_bytes = Vec::new();
    std::io::Read::read_to_end(&mut src.fetch_blob(&cfg_digest)?, &mut cfg_bytes).map_err(|e| {
        match e.kind() {
            std::io::ErrorKind::InvalidData => {
                ConvertError::BadInput(format!("config {cfg_digest}: {e}"))
            }
            _ => ConvertError::io(format!("reading config {cfg_digest}"), e),
        }
    })?;
    let cfg: Value = serde_json::from_slice(&cfg_bytes)
        .map_err(|e| ConvertError::BadInput(format!("config {cfg_digest}: {e}")))?;
    let layers: Vec<(String, u64, String)> = m["layers"]
        .as_array()
        .ok_or_else(|| ConvertError::BadInput(format!("manifest {} has no layers", desc.digest)))?
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap_or_default().to_string(),
                l["size"].as_u64().unwrap_or(0),
                l["mediaType"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let diff_ids: Vec<String> = cfg["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| d.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        return Err(ConvertError::BadInput(format!(
            "config {cfg_digest} lists {} diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        )));
    }
    if let Some(d) = layers
        .iter()
        .map(|l| &l.0)
        .chain(diff_ids.iter())
        .find(|d| !digest::valid(d))
    {
        return Err(ConvertError::BadInput(format!(
            "invalid layer digest {d:?}"
        )));
    }
    let chain_ids = digest::chain_ids(&diff_ids);
    Ok(Source {
        manifest: m,
        config_digest: cfg_digest,
        config: cfg_bytes,
        layers,
        diff_ids,
        chain_ids,
    })
}

/// Converts the manifest `desc` of `src`, pushing results to `dst`. Returns the descriptor
/// of the new manifest (pushed by digest; tagging is the caller's job). `label` names the
/// manifest in progress events (its platform, say).
pub fn convert_manifest(
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    desc: &Desc,
    work: &Path,
    opts: &NativeOptions,
    label: &str,
    dedup: Arc<dyn Dedup>,
) -> Result<(Desc, Vec<u8>, ManifestReport)> {
    let t0 = Instant::now();
    std::fs::create_dir_all(work)
        .map_err(|e| ConvertError::io(format!("creating {}", work.display()), e))?;
    let source = read_source(src.as_ref(), desc)?;
    let n = source.layers.len();
    let ids: Vec<LayerId> = (0..n)
        .map(|index| LayerId {
            manifest: label.to_string(),
            index,
            count: n,
        })
        .collect();
    let reports: Vec<LayerReport> = source
        .layers
        .iter()
        .enumerate()
        .map(|(i, (d, size, mt))| LayerReport {
            index: i,
            source_digest: d.clone(),
            source_size: *size,
            source_media_type: mt.clone(),
            diff_id: source.diff_ids[i].clone(),
            chain_id: source.chain_ids[i].clone(),
            output_media_type: opts.flavor.layer().to_string(),
            ..Default::default()
        })
        .collect();

    // Dedup: which layers exist already. Hits below the last miss are downloaded (from the
    // target) to stack the misses on; hits above it are not needed at all.
    let reuse: Vec<Option<Reuse>> = source
        .chain_ids
        .iter()
        .map(|c| dedup.find_or_claim_layer(c))
        .collect();
    let last_miss = reuse.iter().rposition(Option::is_none);

    let mut run = Run {
        lowers: Vec::new(),
        base: 0,
        pending: Vec::new(),
        outputs: vec![None; n],
        reports,
        uploader: Uploader::start(dst.clone(), !opts.no_upload, opts.progress.clone()),
        uploaded_rows: Default::default(),
    };
    let mut base_out: Option<Reuse> = None;
    if !opts.mkfs {
        let raw = work.join("ext4_64");
        baselayer::extract(&raw)?;
        run.lowers.push(Arc::new(detect::open_layer(&raw)?));
        let tar = baselayer::upload_tar(
            &std::fs::read(&raw).map_err(|e| ConvertError::io("baselayer", e))?,
        );
        let p = work.join("ext4_64.tar");
        std::fs::write(&p, &tar).map_err(|e| ConvertError::io("writing the baselayer tar", e))?;
        let out = Reuse {
            digest: digest::sha256(&tar),
            size: tar.len() as u64,
        };
        run.uploader.send(Push {
            layer: None,
            blob: Output::File(p),
            digest: out.digest.clone(),
            size: out.size,
            then: None,
        });
        base_out = Some(out);
        tracing::info!("using the upstream baselayer");
    }
    run.base = run.lowers.len();
    let vsize = if opts.mkfs {
        opts.vsize_gb << 30
    } else {
        64 << 30
    };
    let remote = !src.is_local();
    // Downloaded-ahead layers and finished outputs share one memory budget; with
    // `--reserve` everything goes to (and stays in) the work directory.
    let budget = Budget::new(if opts.reserve { 0 } else { opts.memory_budget });
    // Outputs for a local target go to files, which the layout takes without a copy.
    let out_budget = if dst.is_local() {
        Budget::new(0)
    } else {
        budget.clone()
    };
    // Background downloads of the source layers that must be converted.
    let mut downloads: Vec<Option<fetch::Download>> = vec![None; n];
    if remote {
        let todo: Vec<usize> = (0..n)
            .filter(|&i| reuse[i].is_none() && Some(i) <= last_miss)
            .collect();
        let jobs = todo
            .iter()
            .map(|&i| Job {
                layer: ids[i].clone(),
                digest: source.layers[i].0.clone(),
                size: source.layers[i].1,
                path: work.join(format!("{i:04}.blob")),
            })
            .collect();
        let dls = fetch::prefetch(
            src.clone(),
            jobs,
            opts.download_concurrency,
            opts.progress.clone(),
            budget.clone(),
        );
        for (i, dl) in todo.into_iter().zip(dls) {
            downloads[i] = Some(dl);
        }
    }

    for i in 0..n {
        let (ldigest, _, _) = &source.layers[i];
        let id = &ids[i];
        if let Some(hit) = &reuse[i] {
            run.reports[i].dedup_hit = true;
            run.reports[i].output_digest = hit.digest.clone();
            run.reports[i].output_size = hit.size;
            opts.progress.reused(id, &hit.digest);
            if Some(i) < last_miss {
                // Needed below a layer to convert: fetch it, digest checked.
                let t = Instant::now();
                opts.progress.start(id, Stage::Download, Some(hit.size));
                let p = work.join(format!("{i:04}.reused"));
                let bytes = fetch::download_to(dst.as_ref(), &hit.digest, &p)?;
                let s = StageReport {
                    seconds: t.elapsed().as_secs_f64(),
                    bytes,
                };
                opts.progress.finish(id, Stage::Download, bytes, s.seconds);
                run.reports[i].download = Some(s);
                run.lowers.push(Arc::new(detect::open_layer(&p)?));
            }
            run.outputs[i] = Some(hit.clone());
            tracing::info!("{id}: reusing {} from the dedup database", hit.digest);
            continue;
        }
        let t = Instant::now();
        let ldir = work.join(format!("{i:04}_{}", ldigest.replace(':', "_")));
        std::fs::create_dir_all(&ldir)
            .map_err(|e| ConvertError::io(format!("creating {}", ldir.display()), e))?;
        let kind = if opts.disable_sparse {
            RwKind::Append
        } else {
            RwKind::Sparse
        };
        let lvsize = match run.lowers.last() {
            Some(l) if i > 0 || !opts.mkfs => l.virtual_size(),
            _ => vsize,
        };
        let chain = &source.chain_ids[i];
        let copts = CommitOptions {
            virtual_size: lvsize,
            uuid: Some(uuid_of(chain)?),
            parent_uuid: if i > 0 {
                uuid_of(&source.chain_ids[i - 1])?
            } else {
                Uuid::NULL
            },
            user_tag: Vec::new(),
        };
        run.reports[i].uuid = copts.uuid.map(|u| u.to_string()).unwrap_or_default();
        // The layer commits while it is written: file data streams through the ZFile
        // compressor (on its own thread) into `commit` (in memory while the budget allows,
        // else the file); metadata waits in `meta`, which later layers stack on once this
        // one is finished.
        let commit = SpillFile::new(ldir.join("overlaybd.commit"), out_budget.clone());
        let meta = ldir.join("metadata");
        let wrap = Wrapping {
            zfile: Some(opts.zfile),
            tar: true,
            overwrite_header: true,
        };
        let upper = StreamLayer::create(commit.clone(), wrap, false, &meta, kind, copts)?;
        let stack = StreamStack::new(Stack::new(run.lowers.clone(), None)?, upper);
        opts.progress
            .start(id, Stage::Apply, Some(source.layers[i].1));
        let mut fs = if i == 0 && opts.mkfs {
            tracing::info!("mkfs in layer 0, vsize {} GiB", opts.vsize_gb);
            Ext4::mkfs(stack, &MkfsOptions::default())?
        } else {
            Ext4::open(stack)?
        };
        let input: Box<dyn std::io::Read + Send> = match &downloads[i] {
            Some(dl) => Box::new(
                TailReader::new(work.join(format!("{i:04}.blob")), dl.clone())
                    .consuming(!opts.reserve),
            ),
            None => src.fetch_blob(ldigest)?,
        };
        let mut counted =
            CountingReader::new(input, opts.progress.clone(), id.clone(), Stage::Apply);
        let stats = obd_tar::apply_layer(&mut fs, &mut counted).map_err(|e| {
            // Corrupt bytes usually break the decompressor or the tar before the digest is
            // checked at the end of the blob: read the rest, so a mismatch is what is told.
            match std::io::copy(&mut counted, &mut std::io::sink()) {
                Err(d) if d.kind() == std::io::ErrorKind::InvalidData => {
                    ConvertError::BadInput(format!("layer {i} ({ldigest}): {d}"))
                }
                _ => apply_error(i, ldigest, e),
            }
        })?;
        if stats.diff_id != source.diff_ids[i] {
            return Err(ConvertError::BadInput(format!(
                "layer {i} ({ldigest}) uncompresses to {}, but the config says diff_id {}",
                stats.diff_id, source.diff_ids[i]
            )));
        }
        fs.flush()?;
        let upper = fs.into_device().into_upper();
        let apply = StageReport {
            seconds: t.elapsed().as_secs_f64(),
            bytes: counted.bytes,
        };
        opts.progress
            .finish(id, Stage::Apply, apply.bytes, apply.seconds);
        if let Some(dl) = &downloads[i] {
            run.reports[i].download = fetch::wait(dl).ok();
        }
        {
            let r = &mut run.reports[i];
            r.entries = stats.entries;
            r.tar_bytes = stats.tar_bytes;
            r.bytes_read = counted.bytes;
            r.apply = Some(apply);
        }
        if !opts.reserve && remote {
            let _ = std::fs::remove_file(work.join(format!("{i:04}.blob")));
        }
        // Commit: the metadata, the index and the trailer go after the streamed data; then
        // the next layer stacks on this one's metadata while the output is hashed.
        let tc = Instant::now();
        opts.progress.start(id, Stage::Commit, None);
        let finished = upper.finish(&ldir.join("metadata.view"))?;
        run.lowers.push(Arc::new(finished.meta_view()?));
        let commit = commit
            .finish()
            .map_err(|e| ConvertError::io("finishing the committed layer", e))?;
        let (queue, rows, progress) = (
            run.uploader.sender(),
            run.uploaded_rows.clone(),
            opts.progress.clone(),
        );
        let (lid, chain2, remove) = (id.clone(), chain.clone(), !opts.reserve);
        let handle = std::thread::spawn(move || {
            hash_and_queue(commit, tc, lid, chain2, progress, queue, rows, remove)
        });
        run.pending.push(CommitJob { index: i, handle });
        // Collect the commits that are done hashing (at most one stays in flight).
        run.finish_commits(1)?;
        tracing::info!(
            "{id} applied: {} entries, {} tar bytes",
            stats.entries,
            stats.tar_bytes
        );
    }
    run.finish_commits(0)?;
    let Run {
        outputs,
        mut reports,
        uploader,
        uploaded_rows,
        ..
    } = run;
    let uploaded = uploader.finish()?;
    let mut out_layers: Vec<Value> = Vec::new();
    let mut out_diff_ids: Vec<String> = Vec::new();
    for o in base_out.iter().chain(outputs.iter().flatten()) {
        out_layers.push(image::native_layer(&o.digest, o.size, opts.flavor));
        out_diff_ids.push(o.digest.clone());
    }
    for (r, o) in reports.iter_mut().zip(&outputs) {
        let o = o.as_ref().expect("every layer has an output");
        r.output_digest = o.digest.clone();
        r.output_size = o.size;
        if !r.dedup_hit {
            r.upload = uploaded.get(&o.digest).cloned();
        }
    }

    let (mdesc, mbuf, report) = finish_manifest(
        dst.as_ref(),
        &source,
        desc,
        work,
        opts,
        ManifestParts {
            layers: out_layers,
            diff_ids: out_diff_ids,
            artifact: image::ARTIFACT_NATIVE,
            reports,
            started: t0,
        },
    )?;
    if !opts.no_upload {
        // The manifest is in the store: now the layers may be remembered.
        for (chain, out) in uploaded_rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            dedup.record_layer(chain, out);
            dedup.release_layer(chain);
        }
    }
    Ok((mdesc, mbuf, report))
}

/// What an engine hands to [`finish_manifest`].
pub(crate) struct ManifestParts {
    /// Output layer descriptors and their diff IDs, bottom → top.
    pub layers: Vec<Value>,
    pub diff_ids: Vec<String>,
    /// `artifactType` with `--referrer`.
    pub artifact: &'static str,
    pub reports: Vec<LayerReport>,
    pub started: Instant,
}

/// The end of every engine: the config (source config with new `diff_ids`) and the
/// manifest are written, pushed (unless `--no-upload`; the manifest by digest, never
/// tagged here) and reported.
pub(crate) fn finish_manifest(
    dst: &dyn Store,
    source: &Source,
    desc: &Desc,
    work: &Path,
    opts: &NativeOptions,
    parts: ManifestParts,
) -> Result<(Desc, Vec<u8>, ManifestReport)> {
    let new_cfg = image::convert_config(&source.config, &parts.diff_ids)?;
    let cfg_desc = Desc {
        media_type: opts.flavor.config().into(),
        digest: digest::sha256(&new_cfg),
        size: new_cfg.len() as u64,
    };
    let cfg_path = work.join("config.json");
    std::fs::write(&cfg_path, &new_cfg).map_err(|e| ConvertError::io("writing the config", e))?;
    if !opts.no_upload {
        dst.push_blob(&cfg_path, &cfg_desc.digest, cfg_desc.size)?;
        tracing::info!("config uploaded");
    }
    let referrer = opts.referrer.then_some((parts.artifact, desc));
    let mbuf = image::build_manifest(
        &source.manifest,
        opts.flavor,
        &cfg_desc,
        parts.layers,
        referrer,
    );
    if opts.dump_manifest {
        std::fs::write(work.join("manifest.json"), &mbuf)
            .map_err(|e| ConvertError::io("writing manifest.json", e))?;
    } else if !opts.reserve {
        let _ = std::fs::remove_file(&cfg_path);
    }
    let mdesc = Desc {
        media_type: opts.flavor.manifest().into(),
        digest: digest::sha256(&mbuf),
        size: mbuf.len() as u64,
    };
    if !opts.no_upload {
        dst.push_manifest(&mbuf, &mdesc.media_type)?;
        tracing::info!("manifest uploaded, {}", mdesc.digest);
    }
    let report = ManifestReport {
        platform: None,
        source_digest: desc.digest.clone(),
        output_digest: mdesc.digest.clone(),
        output_size: mdesc.size,
        output_media_type: mdesc.media_type.clone(),
        config_digest: cfg_desc.digest.clone(),
        config_size: cfg_desc.size,
        dedup_hit: false,
        layers: parts.reports,
        seconds: parts.started.elapsed().as_secs_f64(),
    };
    Ok((mdesc, mbuf, report))
}
