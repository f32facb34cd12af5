//! Conversion dedup as the engine sees it: "was this layer (chain ID) or this manifest
//! converted before, with the same output profile, and is the result in the target
//! store?" and "remember this one". The database-backed implementation lives in
//! [`crate::dedup_db`]; [`NoDedup`] converts everything.

use std::fmt;
use std::sync::Arc;

use crate::store::Desc;

/// An earlier conversion's output blob in the target store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    pub digest: String,
    pub size: u64,
}

/// What the engine asks of a dedup back end. Lookups never fail: a back end that cannot
/// answer (database down) answers "no" and logs why.
pub trait Dedup: Send + Sync {
    /// The output of the layer with this chain ID, if one is known *and* present in the
    /// target store (proved by HEAD, or made so by a cross-repo mount).
    fn find_layer(&self, chain_id: &str) -> Option<Reuse>;
    /// Records a converted layer; called only after its blob is in the target store.
    fn record_layer(&self, chain_id: &str, output: &Reuse);
    /// [`Dedup::find_layer`], and when the layer is not known, claims its conversion: while
    /// another converter sharing the database holds the claim, waits for its row (a layer
    /// shared by many images converts once in a fleet). `None`: convert it here, then
    /// [`Dedup::record_layer`] and [`Dedup::release_layer`].
    fn find_or_claim_layer(&self, chain_id: &str) -> Option<Reuse> {
        self.find_layer(chain_id)
    }
    /// Ends this conversion's claim of a layer (recorded or given up).
    fn release_layer(&self, chain_id: &str) {
        let _ = chain_id;
    }
    /// The converted manifest of a source manifest, if known and present in the target.
    fn find_manifest(&self, source_digest: &str) -> Option<Desc> {
        let _ = source_digest;
        None
    }
    /// Records a converted manifest; called only after it is in the target store.
    fn record_manifest(&self, source_digest: &str, output: &Desc) {
        let _ = (source_digest, output);
    }
}

/// Converts everything, remembers nothing.
pub struct NoDedup;

impl Dedup for NoDedup {
    fn find_layer(&self, _: &str) -> Option<Reuse> {
        None
    }
    fn record_layer(&self, _: &str, _: &Reuse) {}
}

/// A shareable [`Dedup`] for option structs that must be `Clone + Debug`.
#[derive(Clone)]
pub struct DedupHandle(pub Arc<dyn Dedup>);

impl Default for DedupHandle {
    fn default() -> Self {
        DedupHandle(Arc::new(NoDedup))
    }
}

impl fmt::Debug for DedupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DedupHandle")
    }
}
