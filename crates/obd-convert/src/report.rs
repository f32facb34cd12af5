//! What a conversion did, for `--report FILE` (JSON): per manifest and layer the source
//! and output digests and sizes, dedup hits, time and bytes per stage; and totals.

use serde::Serialize;

/// Time and bytes of one stage of one layer.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StageReport {
    pub seconds: f64,
    pub bytes: u64,
}

/// What an upload did: its time and bytes, or why nothing was sent
/// (`{"skipped": "already present"}`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum UploadReport {
    Sent(StageReport),
    Skipped { skipped: String },
}

impl UploadReport {
    /// The reason given when the target already had the blob.
    pub const ALREADY_PRESENT: &'static str = "already present";

    /// Bytes really sent (0 when skipped).
    pub fn bytes_sent(&self) -> u64 {
        match self {
            UploadReport::Sent(s) => s.bytes,
            UploadReport::Skipped { .. } => 0,
        }
    }
}

/// What happened to one layer.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LayerReport {
    pub index: usize,
    pub source_digest: String,
    pub source_size: u64,
    pub source_media_type: String,
    /// Digest of the uncompressed source tar (from the config, checked while applying).
    pub diff_id: String,
    pub chain_id: String,
    pub output_digest: String,
    pub output_size: u64,
    pub output_media_type: String,
    /// LSMT UUID of the output layer (derived from the chain ID).
    pub uuid: String,
    /// Taken from the dedup database instead of being converted.
    pub dedup_hit: bool,
    /// Tar members applied.
    pub entries: u64,
    /// Bytes of the uncompressed source tar.
    pub tar_bytes: u64,
    /// Source (compressed) bytes read, from the store or the download file.
    pub bytes_read: u64,
    /// Output bytes written to the work directory.
    pub bytes_written: u64,
    pub download: Option<StageReport>,
    pub apply: Option<StageReport>,
    pub commit: Option<StageReport>,
    pub upload: Option<UploadReport>,
}

/// What happened to one manifest.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ManifestReport {
    pub platform: Option<String>,
    pub source_digest: String,
    pub output_digest: String,
    pub output_size: u64,
    pub output_media_type: String,
    pub config_digest: String,
    pub config_size: u64,
    /// The whole manifest came from the dedup database.
    pub dedup_hit: bool,
    pub layers: Vec<LayerReport>,
    pub seconds: f64,
}

/// Sums over every layer of a conversion.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub manifests: usize,
    pub layers: usize,
    pub layers_converted: usize,
    pub layers_reused: usize,
    pub source_bytes: u64,
    pub tar_bytes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    /// Bytes really sent to the target (blobs it already had are not counted).
    pub bytes_uploaded: u64,
    /// Layer uploads skipped because the target already had the blob.
    pub uploads_skipped: usize,
    pub output_bytes: u64,
}

impl Totals {
    /// Adds up `manifests`.
    pub fn of(manifests: &[ManifestReport]) -> Totals {
        let mut t = Totals {
            manifests: manifests.len(),
            ..Default::default()
        };
        for m in manifests {
            for l in &m.layers {
                t.layers += 1;
                if l.dedup_hit {
                    t.layers_reused += 1;
                } else {
                    t.layers_converted += 1;
                }
                t.source_bytes += l.source_size;
                t.tar_bytes += l.tar_bytes;
                t.bytes_read += l.bytes_read;
                t.bytes_written += l.bytes_written;
                t.bytes_uploaded += l.upload.as_ref().map_or(0, UploadReport::bytes_sent);
                if matches!(l.upload, Some(UploadReport::Skipped { .. })) {
                    t.uploads_skipped += 1;
                }
                t.output_bytes += l.output_size;
            }
        }
        t
    }
}

/// CPU seconds per stage of a conversion (see [`obd_meter`]): the stages run on threads of
/// their own or are charged per buffer, so these add up to at most the process's CPU time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CpuSeconds {
    /// Receiving source blobs.
    pub download: f64,
    /// Decompressing layers.
    pub inflate: f64,
    /// SHA-256 of compressed blobs, of layer tars (diff IDs) and of outputs.
    pub hash: f64,
    /// Reading tars and writing ext4 into the LSMT layer.
    pub apply: f64,
    /// ZFile compression of the output and writing it.
    pub compress: f64,
    /// Sending outputs to the target.
    pub upload: f64,
}

impl CpuSeconds {
    /// The figures of a [`obd_meter::Snapshot`] difference.
    pub fn of(s: &obd_meter::Snapshot) -> CpuSeconds {
        use obd_meter::Stage;
        CpuSeconds {
            download: s.seconds(Stage::Download),
            inflate: s.seconds(Stage::Inflate),
            hash: s.seconds(Stage::Hash),
            apply: s.seconds(Stage::Apply),
            compress: s.seconds(Stage::Compress),
            upload: s.seconds(Stage::Upload),
        }
    }
}
