//! The block device a TurboOCI layer is built on: committed lowers (a
//! [`Stack`](super::Stack) without upper) under a writable [`WarpLayer`]. Sectors the warp layer maps (fs-meta writes or
//! remote data) come from it; the rest from the lowers. Writes go to the warp layer.

use super::index::Index0;
use super::stack::{MappedUpper, UpperStack};
use super::warp::WarpLayer;

/// Lowers plus a writable warp upper.
pub type WarpStack = UpperStack<WarpLayer>;

impl MappedUpper for WarpLayer {
    fn index(&self) -> &Index0 {
        WarpLayer::index(self)
    }
    fn virtual_size(&self) -> u64 {
        WarpLayer::virtual_size(self)
    }
}
