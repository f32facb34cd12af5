//! [`Dedup`] over a dedup database (`obd-dedup`: MySQL with upstream's tables, or SQLite).
//!
//! A row is only trusted after the registry confirms it: a same-repository layer row needs
//! a HEAD that finds the blob, another repository's row needs a cross-repo mount that the
//! registry answers with 201. A row whose blob is gone is deleted (only while it still
//! points at that blob). Rows are written after the blob or manifest is in the registry.
//! Database errors never fail a conversion: they are logged and count as misses.

use std::sync::Arc;

use obd_dedup::{DedupDb, LayerEntry, LayerKey, ManifestEntry, ManifestKey, Profile};

use crate::dedup::{Dedup, Reuse};
use crate::store::{Desc, Store};

/// How many other repositories' rows are tried for a cross-repo mount.
const MOUNT_CANDIDATES: usize = 4;

/// The dedup database bound to one target store and one output profile.
pub struct DbDedup {
    db: Arc<dyn DedupDb>,
    dst: Arc<dyn Store>,
    host: String,
    repo: String,
    /// Profile of layer rows (every option that changes layer bytes).
    layer_profile: Profile,
    /// Profile of manifest rows (the layer profile plus manifest-only options).
    manifest_profile: Profile,
    /// Media type of the manifests this conversion writes.
    manifest_media_type: String,
    /// This conversion's name in layer claims (host, process, instance).
    owner: String,
    /// Chain IDs this conversion holds claims of (released when done, or on drop).
    claimed: std::sync::Mutex<Vec<String>>,
    /// How long a claim lasts unless renewed ([`DbDedup::renew_claims`]).
    claim_ttl: std::time::Duration,
}

/// How long a layer claim lasts: a converter that dies holding one delays the others at
/// most this long (a layer converting longer may be converted twice, still correctly).
const CLAIM_TTL: std::time::Duration = std::time::Duration::from_secs(120);

impl Drop for DbDedup {
    fn drop(&mut self) {
        let held = std::mem::take(&mut *self.claimed.lock().unwrap_or_else(|p| p.into_inner()));
        for c in held {
            let _ = self.db.release_layer(&self.layer_key(&c), &self.owner);
        }
    }
}

impl DbDedup {
    pub fn new(
        db: Arc<dyn DedupDb>,
        dst: Arc<dyn Store>,
        layer_profile: Profile,
        manifest_profile: Profile,
        manifest_media_type: &str,
    ) -> Self {
        let (host, repo) = dst.location();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let machine = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        DbDedup {
            db,
            dst,
            host,
            repo,
            layer_profile,
            manifest_profile,
            manifest_media_type: manifest_media_type.to_string(),
            owner: format!("{machine}:{}:{n}", std::process::id()),
            claimed: Default::default(),
            claim_ttl: CLAIM_TTL,
        }
    }

    /// Layer claims last `ttl` unless renewed (default 120 s): a service ties them to its
    /// job lease, renewing them with each heartbeat, so a converter that dies holds up the
    /// others for one lease at most.
    pub fn with_claim_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.claim_ttl = ttl;
        self
    }

    /// Extends every claim this conversion holds by its ttl.
    pub fn renew_claims(&self) {
        let held = self
            .claimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for c in held {
            if let Err(err) = self
                .db
                .claim_layer(&self.layer_key(&c), &self.owner, self.claim_ttl)
            {
                tracing::debug!("renewing the claim of {c} failed: {err}");
            }
        }
    }

    fn layer_key(&self, chain_id: &str) -> LayerKey {
        LayerKey {
            host: self.host.clone(),
            repo: self.repo.clone(),
            chain_id: chain_id.to_string(),
            profile: self.layer_profile.clone(),
        }
    }

    fn manifest_key(&self, src: &str) -> ManifestKey {
        ManifestKey {
            host: self.host.clone(),
            repo: self.repo.clone(),
            src_digest: src.to_string(),
            media_type: self.manifest_media_type.clone(),
            profile: self.manifest_profile.clone(),
        }
    }

    fn same_repo_layer(&self, key: &LayerKey) -> Option<Reuse> {
        let e = match self.db.layer_in_repo(key) {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(err) => {
                tracing::warn!("dedup database lookup failed, converting: {err}");
                return None;
            }
        };
        match self.dst.has_blob(&e.digest) {
            Ok(Some(_)) => Some(Reuse {
                digest: e.digest,
                size: e.size,
            }),
            Ok(None) => {
                tracing::info!(
                    "dedup row for {} points at missing blob {}; deleting it",
                    key.chain_id,
                    e.digest
                );
                if let Err(err) = self.db.delete_layer(key, Some(&e.digest)) {
                    tracing::warn!("deleting a stale dedup row failed: {err}");
                }
                None
            }
            Err(err) => {
                tracing::warn!("checking {} in the registry failed: {err}", e.digest);
                None
            }
        }
    }

    fn other_repo_layer(&self, key: &LayerKey) -> Option<Reuse> {
        let rows = match self.db.layer_in_other_repos(key, MOUNT_CANDIDATES) {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!("dedup database lookup failed, converting: {err}");
                return None;
            }
        };
        for e in rows {
            match self.dst.mount_blob(&e.digest, &e.key.repo) {
                Ok(true) => {
                    tracing::info!("mounted {} from {}", e.digest, e.key.repo);
                    let r = Reuse {
                        digest: e.digest,
                        size: e.size,
                    };
                    // The blob is in this repository now: remember it here too.
                    self.record_layer(&key.chain_id, &r);
                    return Some(r);
                }
                Ok(false) => {
                    tracing::debug!("mount of {} from {} refused", e.digest, e.key.repo)
                }
                Err(err) => {
                    tracing::warn!("mount of {} from {} failed: {err}", e.digest, e.key.repo)
                }
            }
        }
        None
    }
}

impl Dedup for DbDedup {
    fn find_or_claim_layer(&self, chain_id: &str) -> Option<Reuse> {
        let key = self.layer_key(chain_id);
        let give_up = std::time::Instant::now() + 2 * CLAIM_TTL.max(self.claim_ttl);
        let mut waited = false;
        loop {
            if let Some(r) = self.find_layer(chain_id) {
                if waited {
                    tracing::info!("layer {chain_id}: converted meanwhile by another converter");
                }
                return Some(r);
            }
            match self.db.claim_layer(&key, &self.owner, self.claim_ttl) {
                Ok(true) => {
                    self.claimed
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(chain_id.to_string());
                    return None;
                }
                Ok(false) if std::time::Instant::now() < give_up => {
                    if !waited {
                        tracing::info!(
                            "layer {chain_id}: another converter is converting it; waiting for its row"
                        );
                    }
                    waited = true;
                    std::thread::sleep(std::time::Duration::from_millis(250));
                }
                Ok(false) => return None,
                Err(err) => {
                    tracing::warn!("claiming layer {chain_id} failed ({err}); converting it");
                    return None;
                }
            }
        }
    }

    fn release_layer(&self, chain_id: &str) {
        let mut held = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = held.iter().position(|c| c == chain_id) {
            held.remove(i);
            drop(held);
            if let Err(err) = self
                .db
                .release_layer(&self.layer_key(chain_id), &self.owner)
            {
                tracing::debug!("releasing the claim of {chain_id} failed: {err}");
            }
        }
    }

    fn find_layer(&self, chain_id: &str) -> Option<Reuse> {
        let key = self.layer_key(chain_id);
        self.same_repo_layer(&key)
            .or_else(|| self.other_repo_layer(&key))
    }

    fn record_layer(&self, chain_id: &str, output: &Reuse) {
        let e = LayerEntry {
            key: self.layer_key(chain_id),
            digest: output.digest.clone(),
            size: output.size,
        };
        if let Err(err) = self.db.put_layer(&e) {
            tracing::warn!("recording layer {chain_id} in the dedup database failed: {err}");
        }
    }

    fn find_manifest(&self, source_digest: &str) -> Option<Desc> {
        let key = self.manifest_key(source_digest);
        let e = match self.db.manifest_in_repo(&key) {
            Ok(Some(e)) => e,
            Ok(None) => return None,
            Err(err) => {
                tracing::warn!("dedup database lookup failed, converting: {err}");
                return None;
            }
        };
        let desc = Desc {
            media_type: e.key.media_type.clone(),
            digest: e.digest.clone(),
            size: e.size,
        };
        match self.dst.fetch_manifest(&desc) {
            Ok(_) => Some(desc),
            Err(crate::ConvertError::NotFound(_)) => {
                tracing::info!(
                    "dedup row for manifest {source_digest} points at missing {}; deleting it",
                    e.digest
                );
                if let Err(err) = self.db.delete_manifest(&key, Some(&e.digest)) {
                    tracing::warn!("deleting a stale dedup row failed: {err}");
                }
                None
            }
            Err(err) => {
                tracing::warn!("checking manifest {} failed: {err}", e.digest);
                None
            }
        }
    }

    fn record_manifest(&self, source_digest: &str, output: &Desc) {
        let e = ManifestEntry {
            key: self.manifest_key(source_digest),
            digest: output.digest.clone(),
            size: output.size,
        };
        if let Err(err) = self.db.put_manifest(&e) {
            tracing::warn!(
                "recording manifest {source_digest} in the dedup database failed: {err}"
            );
        }
    }
}

/// Version of obdconv's output format: bump whenever the same input and options would give
/// different bytes, so rows of older versions stop matching.
pub const FORMAT_VERSION: &str = "obdconv-1";

/// The layer and manifest profiles of a conversion with `opts` by `engine`
/// (`native` or `turbo-<fstype>`).
pub fn profiles(
    opts: &crate::native::NativeOptions,
    engine: &str,
) -> obd_dedup::Result<(Profile, Profile)> {
    let mut fields: Vec<(&str, String)> = vec![
        ("format", FORMAT_VERSION.into()),
        ("engine", engine.into()),
        ("mkfs", opts.mkfs.to_string()),
        (
            "vsize_gb",
            if opts.mkfs {
                opts.vsize_gb.to_string()
            } else {
                "baselayer".into()
            },
        ),
        ("algorithm", format!("{:?}", opts.zfile.algorithm)),
        ("block_size", opts.zfile.block_size.to_string()),
        ("oci", opts.flavor.oci.to_string()),
        ("sparse", (!opts.disable_sparse).to_string()),
    ];
    let layer = Profile::from_fields(fields.iter().map(|(k, v)| (*k, v.as_str())))?;
    fields.push(("referrer", opts.referrer.to_string()));
    let manifest = Profile::from_fields(fields.iter().map(|(k, v)| (*k, v.as_str())))?;
    Ok((layer, manifest))
}
