//! The native overlaybd engine for one image manifest.
//!
//! Layers are fetched (remote stores: prefetched concurrently into the work dir, digest
//! checked while downloading) and applied **in order** onto an ext4 filesystem that lives in
//! an LSMT stack: lowers are the layers already committed, the upper is a fresh writable
//! layer. Each upper is committed (ZFile lz4 + tar, UUID from the chain ID) while the
//! previous layers upload in the background. Then the config (only `rootfs.diff_ids`
//! changed) and the manifest are pushed; the tag is set by the caller's request last.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use obd_ext4::{Ext4, MkfsOptions};
use obd_format::detect;
use obd_format::lsmt::{CommitOptions, LsmtRo, RwKind, RwLayer, Stack};
use obd_format::output::Wrapping;
use obd_format::uuid::Uuid;
use obd_format::zfile::ZFileOptions;
use serde::Serialize;
use serde_json::Value;

use crate::baselayer;
use crate::digest::{self, sha256_file};
use crate::error::{ConvertError, Result};
use crate::image::{self, Flavor};
use crate::store::{Desc, Store};

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
        }
    }
}

/// What happened to one layer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LayerReport {
    pub index: usize,
    pub source_digest: String,
    pub source_size: u64,
    pub diff_id: String,
    pub output_digest: String,
    pub output_size: u64,
    pub uuid: String,
    pub entries: u64,
    pub tar_bytes: u64,
    pub apply_commit_seconds: f64,
}

/// What happened to one manifest.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ManifestReport {
    pub platform: Option<String>,
    pub source_digest: String,
    pub output_digest: String,
    pub output_size: u64,
    pub config_digest: String,
    pub layers: Vec<LayerReport>,
    pub seconds: f64,
}

fn uuid_of(chain: &str) -> Result<Uuid> {
    Uuid::from_chain_id(chain)
        .ok_or_else(|| ConvertError::BadInput(format!("chain ID {chain} is not a sha256 digest")))
}

/// Background pushes of committed layers; the first error wins.
struct Uploader {
    tx: Option<mpsc::Sender<(PathBuf, String, u64)>>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Uploader {
    fn start(dst: Arc<dyn Store>, enabled: bool) -> Self {
        let (tx, rx) = mpsc::channel::<(PathBuf, String, u64)>();
        let handle = std::thread::spawn(move || -> Result<()> {
            for (path, d, size) in rx {
                if enabled {
                    dst.push_blob(&path, &d, size)?;
                    tracing::info!("layer {d} uploaded");
                }
            }
            Ok(())
        });
        Uploader {
            tx: Some(tx),
            handle: Some(handle),
        }
    }
    fn send(&self, p: PathBuf, d: String, size: u64) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((p, d, size));
        }
    }
    fn finish(mut self) -> Result<()> {
        self.tx.take();
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ConvertError::Store("the upload thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Progress of one background download, shared with the reader that tails it.
#[derive(Default)]
struct DlState {
    /// Bytes written to the file so far.
    written: u64,
    /// `Some` once the download ended (successfully, or with the error message).
    done: Option<std::result::Result<(), (std::io::ErrorKind, String)>>,
}

type Download = Arc<(std::sync::Mutex<DlState>, std::sync::Condvar)>;

/// Reads a layer file while it is being downloaded: blocks until more bytes arrive, ends
/// when the download has ended, and fails if the download failed (e.g. a digest mismatch).
struct TailReader {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    dl: Download,
}

impl std::io::Read for TailReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let (lock, cv) = &*self.dl;
        let avail = {
            let mut st = lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if st.written > self.pos {
                    break st.written - self.pos;
                }
                match &st.done {
                    Some(Ok(())) => return Ok(0),
                    Some(Err((k, m))) => return Err(std::io::Error::new(*k, m.clone())),
                    None => st = cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        if self.file.is_none() {
            self.file = Some(File::open(&self.path)?);
        }
        let n = (buf.len() as u64).min(avail) as usize;
        let k = std::os::unix::fs::FileExt::read_at(
            self.file.as_ref().unwrap(),
            &mut buf[..n],
            self.pos,
        )?;
        self.pos += k as u64;
        Ok(k)
    }
}

/// Starts background downloads of the layers into `dir` (for remote stores), at most
/// `concurrency` at once, in layer order. Each layer can be read (tailed) while it arrives.
fn prefetch(
    src: Arc<dyn Store>,
    layers: &[(String, u64)],
    dir: &Path,
    concurrency: usize,
) -> Vec<(PathBuf, Download)> {
    let jobs: Vec<(usize, String, PathBuf, Download)> = layers
        .iter()
        .enumerate()
        .map(|(i, (d, _))| {
            (
                i,
                d.clone(),
                dir.join(format!("{i:04}.blob")),
                Download::default(),
            )
        })
        .collect();
    let outs = jobs
        .iter()
        .map(|(_, _, p, dl)| (p.clone(), dl.clone()))
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        jobs,
    )));
    for _ in 0..concurrency.max(1).min(layers.len().max(1)) {
        let (src, queue) = (src.clone(), queue.clone());
        std::thread::spawn(move || loop {
            let Some((i, d, path, dl)) =
                queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
            else {
                break;
            };
            let (lock, cv) = &*dl;
            let r = (|| -> std::io::Result<()> {
                let mut rd = src.fetch_blob(&d).map_err(|e| {
                    let kind = match e {
                        ConvertError::NotFound(_) => std::io::ErrorKind::NotFound,
                        ConvertError::Auth(_) => std::io::ErrorKind::PermissionDenied,
                        ConvertError::BadInput(_) => std::io::ErrorKind::InvalidData,
                        _ => std::io::ErrorKind::Other,
                    };
                    std::io::Error::new(kind, e.to_string())
                })?;
                let mut f = File::create(&path)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = rd.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    std::io::Write::write_all(&mut f, &buf[..n])?;
                    lock.lock().unwrap_or_else(|p| p.into_inner()).written += n as u64;
                    cv.notify_all();
                }
            })();
            match &r {
                Ok(()) => tracing::info!("downloaded layer {i}"),
                Err(e) => tracing::warn!("download of layer {i} ({d}) failed: {e}"),
            }
            lock.lock().unwrap_or_else(|p| p.into_inner()).done =
                Some(r.map_err(|e| (e.kind(), e.to_string())));
            cv.notify_all();
        });
    }
    outs
}

/// A layer being committed in the background: its index, the thread, its writable data file.
type CommitJob = (
    usize,
    std::thread::JoinHandle<Result<(PathBuf, String, u64)>>,
    PathBuf,
);

/// Waits for background commits, oldest first, until at most `keep` are in flight: each
/// finished layer's writable view in `lowers` is swapped for the committed file, its
/// writable data removed, and its upload queued.
#[allow(clippy::too_many_arguments)]
fn finish_commits(
    keep: usize,
    pending: &mut Vec<CommitJob>,
    lowers: &mut [Arc<LsmtRo>],
    base: usize,
    uploader: &Uploader,
    out_layers: &mut Vec<Value>,
    out_diff_ids: &mut Vec<String>,
    opts: &NativeOptions,
) -> Result<()> {
    while pending.len() > keep {
        let (i, job, wd) = pending.remove(0);
        let (commit, d, size) = job
            .join()
            .map_err(|_| ConvertError::Store(format!("the commit of layer {i} panicked")))??;
        lowers[base + i] = Arc::new(detect::open_layer(&commit)?);
        if !opts.reserve {
            let _ = std::fs::remove_file(&wd);
        }
        tracing::info!("layer {i} committed: {size} bytes, {d}");
        uploader.send(commit, d.clone(), size);
        out_layers.push(image::native_layer(&d, size, opts.flavor));
        out_diff_ids.push(d);
    }
    Ok(())
}

/// Converts the manifest `desc` of `src`, pushing results to `dst`. Returns the descriptor
/// of the new manifest (pushed by digest; tagging is the caller's job).
pub fn convert_manifest(
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    desc: &Desc,
    work: &Path,
    opts: &NativeOptions,
) -> Result<(Desc, Vec<u8>, ManifestReport)> {
    let t0 = Instant::now();
    std::fs::create_dir_all(work)
        .map_err(|e| ConvertError::io(format!("creating {}", work.display()), e))?;
    let mbytes = src.fetch_manifest(desc)?;
    let m: Value = serde_json::from_slice(&mbytes)
        .map_err(|e| ConvertError::BadInput(format!("manifest {}: {e}", desc.digest)))?;
    let cfg_digest = m["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut cfg_bytes = Vec::new();
    std::io::Read::read_to_end(&mut src.fetch_blob(&cfg_digest)?, &mut cfg_bytes)
        .map_err(|e| ConvertError::BadInput(format!("config {cfg_digest}: {e}")))?;
    let cfg: Value = serde_json::from_slice(&cfg_bytes)
        .map_err(|e| ConvertError::BadInput(format!("config {cfg_digest}: {e}")))?;
    let layers: Vec<(String, u64)> = m["layers"]
        .as_array()
        .ok_or_else(|| ConvertError::BadInput(format!("manifest {} has no layers", desc.digest)))?
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().unwrap_or_default().to_string(),
                l["size"].as_u64().unwrap_or(0),
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
    if let Some((d, _)) = layers.iter().find(|(d, _)| !digest::valid(d)) {
        return Err(ConvertError::BadInput(format!(
            "invalid layer digest {d:?}"
        )));
    }
    let chains = digest::chain_ids(&diff_ids);
    let mut report = ManifestReport {
        source_digest: desc.digest.clone(),
        config_digest: String::new(),
        ..Default::default()
    };

    // Lowers: the baselayer (without mkfs), then each committed layer.
    let mut lowers: Vec<Arc<LsmtRo>> = Vec::new();
    let mut base_blob: Option<(PathBuf, String, u64)> = None;
    if !opts.mkfs {
        let raw = work.join("ext4_64");
        baselayer::extract(&raw)?;
        lowers.push(Arc::new(detect::open_layer(&raw)?));
        let tar = baselayer::upload_tar(
            &std::fs::read(&raw).map_err(|e| ConvertError::io("baselayer", e))?,
        );
        let p = work.join("ext4_64.tar");
        std::fs::write(&p, &tar).map_err(|e| ConvertError::io("writing the baselayer tar", e))?;
        base_blob = Some((p, digest::sha256(&tar), tar.len() as u64));
        tracing::info!("using the upstream baselayer");
    }
    let vsize = if opts.mkfs {
        opts.vsize_gb << 30
    } else {
        64 << 30
    };
    let remote = !src.is_local();
    let downloads = if remote {
        Some(prefetch(
            src.clone(),
            &layers,
            work,
            opts.download_concurrency,
        ))
    } else {
        None
    };
    let uploader = Uploader::start(dst.clone(), !opts.no_upload);
    if let Some((p, d, s)) = &base_blob {
        uploader.send(p.clone(), d.clone(), *s);
    }

    let base_lowers = lowers.len();
    let mut pending: Vec<CommitJob> = Vec::new();
    let mut out_layers: Vec<Value> = Vec::new();
    let mut out_diff_ids: Vec<String> = Vec::new();
    if let Some((_, d, s)) = &base_blob {
        out_layers.push(image::native_layer(d, *s, opts.flavor));
        out_diff_ids.push(d.clone());
    }
    for (i, (ldigest, lsize)) in layers.iter().enumerate() {
        let t = Instant::now();
        let ldir = work.join(format!("{i:04}_{}", ldigest.replace(':', "_")));
        std::fs::create_dir_all(&ldir)
            .map_err(|e| ConvertError::io(format!("creating {}", ldir.display()), e))?;
        let (wd, wi) = (ldir.join("writable_data"), ldir.join("writable_index"));
        let kind = if opts.disable_sparse {
            RwKind::Append
        } else {
            RwKind::Sparse
        };
        let lvsize = if i == 0 {
            vsize
        } else {
            lowers.last().map(|l| l.virtual_size()).unwrap_or(vsize)
        };
        let upper = RwLayer::create(&wd, &wi, lvsize, kind, Uuid::NULL, Uuid::NULL)?;
        let stack = Stack::new(lowers.clone(), Some(upper))?;
        let mut fs = if i == 0 && opts.mkfs {
            tracing::info!("mkfs in layer 0, vsize {} GiB", opts.vsize_gb);
            Ext4::mkfs(stack, &MkfsOptions::default())?
        } else {
            Ext4::open(stack)?
        };
        let input: Box<dyn std::io::Read + Send> = match &downloads {
            Some(dls) => Box::new(TailReader {
                path: dls[i].0.clone(),
                file: None,
                pos: 0,
                dl: dls[i].1.clone(),
            }),
            None => src.fetch_blob(ldigest)?,
        };
        let stats = obd_tar::apply_layer(&mut fs, input).map_err(|e| match e {
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
        })?;
        if stats.diff_id != diff_ids[i] {
            return Err(ConvertError::BadInput(format!(
                "layer {i} ({ldigest}) uncompresses to {}, but the config says diff_id {}",
                stats.diff_id, diff_ids[i]
            )));
        }
        fs.flush()?;
        let upper = fs
            .into_device()
            .into_upper()
            .expect("the stack has an upper");
        let copts = CommitOptions {
            virtual_size: upper.virtual_size(),
            uuid: Some(uuid_of(&chains[i])?),
            parent_uuid: if i > 0 {
                uuid_of(&chains[i - 1])?
            } else {
                Uuid::NULL
            },
            user_tag: Vec::new(),
        };
        // The next layer stacks on this one's writable data while it is committed in the
        // background (decompression of the next layer and compression of this one overlap).
        let segs = upper.index().dump();
        let src_file = obd_format::io::FileSource::open(&wd)
            .map_err(|e| ConvertError::io(format!("opening {}", wd.display()), e))?;
        let view = LsmtRo::from_index(Arc::new(src_file), segs, upper.virtual_size())?;
        lowers.push(Arc::new(view));
        let commit = ldir.join("overlaybd.commit");
        let uuid_str = copts.uuid.map(|u| u.to_string()).unwrap_or_default();
        let zopts = opts.zfile;
        let (reserve, wi2) = (opts.reserve, wi.clone());
        let job = std::thread::spawn(move || -> Result<(PathBuf, String, u64)> {
            let out = File::create(&commit)
                .map_err(|e| ConvertError::io(format!("creating {}", commit.display()), e))?;
            let wrap = Wrapping {
                zfile: Some(zopts),
                tar: true,
                overwrite_header: true,
            };
            upper.commit_to(&copts, wrap, out)?;
            drop(upper);
            let (d, size) = sha256_file(&commit)
                .map_err(|e| ConvertError::io("hashing the committed layer", e))?;
            if !reserve {
                let _ = std::fs::remove_file(&wi2);
            }
            Ok((commit, d, size))
        });
        if !opts.reserve && remote {
            let _ = std::fs::remove_file(work.join(format!("{i:04}.blob")));
        }
        pending.push((i, job, wd.clone()));
        // Keep at most one commit in flight: collect the older ones in order.
        finish_commits(
            1,
            &mut pending,
            &mut lowers,
            base_lowers,
            &uploader,
            &mut out_layers,
            &mut out_diff_ids,
            opts,
        )?;
        report.layers.push(LayerReport {
            index: i,
            source_digest: ldigest.clone(),
            source_size: *lsize,
            diff_id: stats.diff_id.clone(),
            output_digest: String::new(),
            output_size: 0,
            uuid: uuid_str,
            entries: stats.entries,
            tar_bytes: stats.tar_bytes,
            apply_commit_seconds: t.elapsed().as_secs_f64(),
        });
        tracing::info!(
            "layer {i} applied: {} entries, {} tar bytes",
            stats.entries,
            stats.tar_bytes
        );
    }
    finish_commits(
        0,
        &mut pending,
        &mut lowers,
        base_lowers,
        &uploader,
        &mut out_layers,
        &mut out_diff_ids,
        opts,
    )?;
    for (r, l) in report
        .layers
        .iter_mut()
        .zip(out_layers.iter().skip(base_lowers))
    {
        r.output_digest = l["digest"].as_str().unwrap_or_default().to_string();
        r.output_size = l["size"].as_u64().unwrap_or(0);
    }
    uploader.finish()?;

    let new_cfg = image::convert_config(&cfg_bytes, &out_diff_ids)?;
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
    let referrer = opts.referrer.then_some((image::ARTIFACT_NATIVE, desc));
    let mbuf = image::build_manifest(&m, opts.flavor, &cfg_desc, out_layers, referrer);
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
    report.output_digest = mdesc.digest.clone();
    report.output_size = mdesc.size;
    report.config_digest = cfg_desc.digest.clone();
    report.seconds = t0.elapsed().as_secs_f64();
    Ok((mdesc, mbuf, report))
}
