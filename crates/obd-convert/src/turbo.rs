//! The TurboOCIv1 engine for one image manifest.
//!
//! The source layers stay as they are. Per layer, the tar is streamed once: a gzip
//! random-access index (`gzip.meta`) is built while it is decompressed, and the layer is
//! applied **metadata only** onto ext4 on a warp LSMT layer: file blocks are allocated but
//! mapped onto the file data inside the uncompressed tar (RemoteData, tag 1), and only
//! metadata blocks are written (tag 0). The committed warp layer (`ext4.fs.meta`, ZFile
//! lz4) is packed with an empty `.turbo.ociv1` marker and `gzip.meta` into a small
//! `turboOCIv1.tar.gz`, the blob of the output layer, whose annotations point at the
//! source layer. When the target repository differs from the source, the source blobs are
//! copied there too (the runtime fetches them from the image's own repository).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use obd_ext4::{Ext4, MkfsOptions};
use obd_format::detect;
use obd_format::gzindex::GzIndexOptions;
use obd_format::io::ReadAt;
use obd_format::lsmt::{CommitOptions, LsmtRo, Stack, WarpLayer, WarpStack};
use obd_format::output::Wrapping;
use obd_format::uuid::Uuid;
use obd_format::zfile::{Algorithm, ZFileOptions};

use crate::baselayer;
use crate::digest::HashWriter;
use crate::error::{ConvertError, Result};
use crate::fetch::{self, Job, TailReader};
use crate::image;
use crate::memory::{Budget, Output};
use crate::native::{finish_manifest, read_source, ManifestParts, NativeOptions};
use crate::progress::{CountingReader, LayerId, Stage};
use crate::report::{LayerReport, ManifestReport, StageReport};
use crate::store::{Desc, Store};
use crate::upload::{Push, Uploader};

/// Name of the marker file inside `turboOCIv1.tar.gz`.
pub const MARKER: &str = ".turbo.ociv1";
/// Name of the gzip index inside `turboOCIv1.tar.gz`.
pub const GZIP_META: &str = "gzip.meta";

/// Reads as zeros: the target of a lower warp layer while building (the filesystem engine
/// never reads file data of lower layers).
struct Zeros(u64);

impl ReadAt for Zeros {
    fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.0.saturating_sub(off)) as usize;
        buf[..n].fill(0);
        Ok(n)
    }
    fn size(&self) -> u64 {
        self.0
    }
}

/// Writes `turboOCIv1.tar.gz`: the fs-meta file, the marker and the gzip index, with fixed
/// metadata (mode 0644, uid/gid 0, mtime 0) so the bytes depend only on the contents.
/// Returns `(digest, size, diff_id)`.
fn pack(
    out: &Path,
    fs_meta: &Path,
    fs_meta_name: &str,
    gz_meta: Option<&[u8]>,
) -> io::Result<(String, u64, String)> {
    let outer = HashWriter::new(io::BufWriter::new(File::create(out)?));
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(outer, flate2::Compression::new(6));
    let mut tb = tar::Builder::new(HashWriter::new(gz));
    tb.mode(tar::HeaderMode::Deterministic);
    let header = |size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        h
    };
    let mut meta = File::open(fs_meta)?;
    let len = meta.metadata()?.len();
    tb.append_data(&mut header(len), fs_meta_name, &mut meta)?;
    tb.append_data(&mut header(0), MARKER, io::empty())?;
    if let Some(g) = gz_meta {
        tb.append_data(&mut header(g.len() as u64), GZIP_META, g)?;
    }
    let (gz, diff_id, _) = tb.into_inner()?.finish();
    let mut outer = gz.finish()?;
    outer.flush()?;
    let (_, d, size) = outer.finish();
    Ok((d, size, diff_id))
}

/// Converts manifest `desc` of `src` into a TurboOCIv1 image with fs-meta of `fstype`,
/// pushing to `dst`. Returns the new manifest (pushed by digest, not tagged).
pub fn convert_manifest(
    src: Arc<dyn Store>,
    dst: Arc<dyn Store>,
    desc: &Desc,
    work: &Path,
    opts: &NativeOptions,
    fstype: &str,
    label: &str,
) -> Result<(Desc, Vec<u8>, ManifestReport)> {
    let t0 = Instant::now();
    if fstype != "ext4" && fstype != "erofs" {
        return Err(ConvertError::Unsupported(format!(
            "TurboOCIv1 with --fstype {fstype} is not supported (ext4 or erofs)"
        )));
    }
    if !opts.mkfs && fstype == "erofs" {
        // Upstream stacks EROFS metadata on the ext4 baselayer, which no runtime can read.
        return Err(ConvertError::Unsupported(
            "TurboOCIv1 with --fstype erofs needs --mkfs (EROFS cannot stack on the ext4 baselayer)"
                .into(),
        ));
    }
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
    let remote = !src.is_local();
    let copy_sources = src.location() != dst.location() && !opts.no_upload;
    let blob_path = |i: usize| work.join(format!("{i:04}.blob"));
    let downloads: Vec<Option<fetch::Download>> = if remote {
        let jobs = (0..n)
            .map(|i| Job {
                layer: ids[i].clone(),
                digest: source.layers[i].0.clone(),
                size: source.layers[i].1,
                path: blob_path(i),
            })
            .collect();
        fetch::prefetch(
            src.clone(),
            jobs,
            opts.download_concurrency,
            opts.progress.clone(),
            // Blobs pushed again to the target are kept whole in their files.
            Budget::new(if copy_sources || opts.reserve {
                0
            } else {
                opts.memory_budget
            }),
        )
        .into_iter()
        .map(Some)
        .collect()
    } else {
        vec![None; n]
    };
    let uploader = Uploader::start(dst.clone(), !opts.no_upload, opts.progress.clone());
    // Without mkfs, every layer stacks on the upstream baselayer (64 GiB), which the output
    // lists first as the raw ZFile upstream pushes (not tar-wrapped).
    let vsize = if opts.mkfs {
        opts.vsize_gb << 30
    } else {
        64 << 30
    };
    let mut lowers: Vec<Arc<LsmtRo>> = Vec::new();
    let mut base: Option<(String, u64)> = None;
    if !opts.mkfs {
        let raw = work.join("ext4_64");
        baselayer::extract(&raw)?;
        lowers.push(Arc::new(detect::open_layer(&raw)?));
        let size = std::fs::metadata(&raw)
            .map_err(|e| ConvertError::io("the baselayer", e))?
            .len();
        let d = baselayer::RAW_DIGEST.to_string();
        uploader.send(Push {
            layer: None,
            blob: Output::File(raw),
            digest: d.clone(),
            size,
            then: None,
        });
        base = Some((d, size));
        tracing::info!("using the upstream baselayer");
    }
    let mut out_layers = Vec::new();
    let mut out_diff_ids = Vec::new();
    let mut reports = Vec::new();
    for i in 0..n {
        let (ldigest, lsize, lmt) = &source.layers[i];
        let id = &ids[i];
        let t = Instant::now();
        let ldir = work.join(format!("{i:04}_{}", ldigest.replace(':', "_")));
        std::fs::create_dir_all(&ldir)
            .map_err(|e| ConvertError::io(format!("creating {}", ldir.display()), e))?;
        opts.progress.start(id, Stage::Apply, Some(*lsize));
        let input: Box<dyn Read + Send> = match &downloads[i] {
            Some(dl) => Box::new(TailReader::new(blob_path(i), dl.clone())),
            None => src.fetch_blob(ldigest)?,
        };
        let counted = CountingReader::new(input, opts.progress.clone(), id.clone(), Stage::Apply);
        let bad = |e: io::Error| match e.kind() {
            io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput
            | io::ErrorKind::UnexpectedEof => {
                ConvertError::BadInput(format!("layer {i} ({ldigest}): {e}"))
            }
            io::ErrorKind::NotFound => {
                ConvertError::NotFound(format!("layer {i} ({ldigest}): {e}"))
            }
            _ => ConvertError::io(format!("layer {i} ({ldigest})"), e),
        };
        let (fm, fi) = (ldir.join("writable_data"), ldir.join("writable_index"));
        let upper = WarpLayer::create(&fm, &fi, vsize, Uuid::NULL, Uuid::NULL)?;
        let dev = WarpStack::new(Stack::new(lowers.clone(), None)?, upper);
        let map_err = |e: obd_tar::ApplyError| match e {
            obd_tar::ApplyError::Io(ioe) => bad(ioe),
            other => ConvertError::from(other),
        };
        // The blob is read once: gzip through the indexer, the tar hashed for its diff ID,
        // and applied as metadata whose file blocks map into the tar.
        let applied = obd_tar::read_turbo_layer(
            counted,
            GzIndexOptions::default(),
            |h| -> Result<(u64, WarpStack)> {
                let mut dev = dev;
                if fstype == "erofs" {
                    // EROFS: mappings are collected, then added after the metadata is
                    // written (the data blocks of this layer never overlap its metadata).
                    let mut maps: Vec<(u64, u64, u64)> = Vec::new();
                    let erofs_err =
                        |e| ConvertError::BadInput(format!("layer {i} ({ldigest}): {e}"));
                    let entries = {
                        let mut b = if i == 0 {
                            let uuid =
                                Uuid::from_chain_id(&source.chain_ids[i]).unwrap_or_default();
                            obd_erofs::ErofsBuilder::new_first_layer(&mut dev, uuid.0)
                        } else {
                            obd_erofs::ErofsBuilder::open(&mut dev)
                        }
                        .map_err(erofs_err)?;
                        let st = b
                            .apply_tar(h, &mut |off, len, toff| {
                                maps.push((off, len, toff));
                                Ok(())
                            })
                            .map_err(erofs_err)?;
                        b.finish().map_err(erofs_err)?;
                        st.entries
                    };
                    for (off, len, toff) in maps {
                        dev.upper.remote_data(off, len, toff)?;
                    }
                    Ok((entries, dev))
                } else {
                    let mut fs = if i == 0 && opts.mkfs {
                        Ext4::mkfs(dev, &MkfsOptions::default())?
                    } else {
                        Ext4::open(dev)?
                    };
                    let stats = obd_tar::apply_tar_remote(
                        &mut fs,
                        h,
                        &mut |d: &mut WarpStack, off, len, toff| {
                            d.upper
                                .remote_data(off, len, toff)
                                .map(|_| ())
                                .map_err(io::Error::other)
                        },
                    )
                    .map_err(map_err)?;
                    fs.flush()?;
                    Ok((stats.entries, fs.into_device()))
                }
            },
        );
        let ((entries, dev), info) = applied.map_err(|e| match e {
            obd_tar::TurboStreamError::Consumer(c) => c,
            obd_tar::TurboStreamError::Stream(obd_tar::RemoteApplyError::Unsupported(m)) => {
                ConvertError::Unsupported(format!("layer {i} ({ldigest}): {m}"))
            }
            obd_tar::TurboStreamError::Stream(obd_tar::RemoteApplyError::Apply(a)) => map_err(a),
            obd_tar::TurboStreamError::Stream(obd_tar::RemoteApplyError::Index(f)) => {
                ConvertError::from(f)
            }
        })?;
        let (diff_id, tar_bytes) = (info.diff_id, info.tar_bytes);
        if diff_id != source.diff_ids[i] {
            return Err(ConvertError::BadInput(format!(
                "layer {i} ({ldigest}) uncompresses to {diff_id}, but the config says diff_id {}",
                source.diff_ids[i]
            )));
        }
        let gzip = info.gz_index.is_some();
        let gz_meta = info.gz_index.map(|b| b.meta);
        let upper = dev.into_upper();
        let apply = StageReport {
            seconds: t.elapsed().as_secs_f64(),
            bytes: *lsize,
        };
        opts.progress
            .finish(id, Stage::Apply, apply.bytes, apply.seconds);
        // Commit the warp layer (ZFile lz4 4K, no tar wrapper, no UUID: as upstream).
        let tc = Instant::now();
        opts.progress.start(id, Stage::Commit, None);
        let meta_name = format!("{fstype}.fs.meta");
        let meta_path = ldir.join(&meta_name);
        let out = File::create(&meta_path)
            .map_err(|e| ConvertError::io(format!("creating {}", meta_path.display()), e))?;
        let copts = CommitOptions {
            virtual_size: upper.virtual_size(),
            uuid: None,
            parent_uuid: Uuid::NULL,
            user_tag: Vec::new(),
        };
        let wrap = Wrapping {
            zfile: Some(ZFileOptions {
                algorithm: Algorithm::Lz4,
                block_size: 4096,
                verify: true,
                threads: opts.zfile.threads,
            }),
            tar: false,
            overwrite_header: true,
        };
        upper.commit_to(&copts, wrap, out)?;
        drop(upper);
        if !opts.reserve {
            let _ = std::fs::remove_file(&fm);
            let _ = std::fs::remove_file(&fi);
        }
        let u = detect::unwrap(detect::open_file(&meta_path)?)?;
        lowers.push(Arc::new(LsmtRo::open_warp(
            u.payload,
            Arc::new(Zeros(tar_bytes)),
        )?));
        let blob = ldir.join("turboOCIv1.tar.gz");
        let (d, size, tdiff) = pack(&blob, &meta_path, &meta_name, gz_meta.as_deref())
            .map_err(|e| ConvertError::io("writing turboOCIv1.tar.gz", e))?;
        let commit = StageReport {
            seconds: tc.elapsed().as_secs_f64(),
            bytes: size,
        };
        opts.progress
            .finish(id, Stage::Commit, size, commit.seconds);
        // The runtime reads the source blob from the image's repository: copy it there.
        if copy_sources && dst.has_blob(ldigest)?.is_none() {
            let p = blob_path(i);
            match &downloads[i] {
                Some(dl) => {
                    fetch::wait(dl).map_err(bad)?;
                }
                None => {
                    fetch::download_to(src.as_ref(), ldigest, &p)?;
                }
            }
            uploader.send(Push {
                layer: None,
                blob: Output::File(p),
                digest: ldigest.clone(),
                size: *lsize,
                then: None,
            });
        } else if let Some(dl) = &downloads[i] {
            let _ = fetch::wait(dl);
            if !opts.reserve {
                let _ = std::fs::remove_file(blob_path(i));
            }
        }
        uploader.send(Push {
            layer: Some(id.clone()),
            blob: Output::File(blob.clone()),
            digest: d.clone(),
            size,
            then: None,
        });
        out_layers.push(image::turbo_layer(
            &d,
            size,
            opts.flavor,
            ldigest,
            lmt,
            gzip,
            fstype,
        ));
        out_diff_ids.push(tdiff);
        reports.push(LayerReport {
            index: i,
            source_digest: ldigest.clone(),
            source_size: *lsize,
            source_media_type: lmt.clone(),
            diff_id,
            chain_id: source.chain_ids[i].clone(),
            output_digest: d,
            output_size: size,
            output_media_type: out_layers[i]["mediaType"]
                .as_str()
                .unwrap_or_default()
                .into(),
            entries,
            tar_bytes,
            bytes_read: *lsize,
            bytes_written: size,
            apply: Some(apply),
            commit: Some(commit),
            ..Default::default()
        });
        tracing::info!("{id}: turbo meta {size} bytes for {lsize} source bytes");
    }
    if let Some((d, size)) = base {
        out_layers.insert(0, image::native_layer(&d, size, opts.flavor));
        out_diff_ids.insert(0, d);
    }
    let uploaded = uploader.finish()?;
    for r in &mut reports {
        r.upload = uploaded.get(&r.output_digest).cloned();
    }
    finish_manifest(
        dst.as_ref(),
        &source,
        desc,
        work,
        opts,
        ManifestParts {
            layers: out_layers,
            diff_ids: out_diff_ids,
            artifact: image::ARTIFACT_TURBO,
            reports,
            started: t0,
        },
    )
}
