//! obd-convert: converts OCI/Docker images into overlaybd images.
//!
//! * [`store`]: where images come from and go to ([`store::Store`]), with an OCI image
//!   layout implementation ([`store::OciLayout`]); the registry client plugs in the same way.
//! * [`digest`]: sha256 digests, chain IDs, hashing readers/writers.
//! * [`image`]: media types, annotations, manifest/config/index JSON.
//! * [`registry_store`]: the [`store::Store`] of a repository in a registry.
//! * [`native`]: the native overlaybd engine for one manifest (layers → LSMT/ext4 blobs).
//! * [`fetch`], [`upload`]: background downloads (readable while they arrive) and pushes.
//! * [`memory`]: the conversion's memory budget, and outputs that stay in memory within it.
//! * [`dedup`]: reuse of earlier conversions ([`dedup::Dedup`]).
//! * [`progress`], [`report`]: progress events per layer and stage; the JSON report.
//! * [`turbo`]: the TurboOCIv1 engine (fs metadata pointing into the original layers).
//! * [`archive`]: read-only stores over `oci-archive:` and `docker-archive:` tar files.
//! * [`baselayer`]: the upstream `ext4_64` baselayer used by `--mkfs=false`.
//! * [`convert`](mod@convert): the top level: resolve the source, walk indexes, convert
//!   each platform, push, tag.

pub mod archive;
pub mod baselayer;
pub mod convert;
pub mod dedup;
pub mod dedup_db;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod image;
pub mod memory;
pub mod native;
pub mod progress;
pub mod registry_store;
pub mod report;
pub mod store;
pub mod turbo;
pub mod upload;

pub use convert::{already_converted, convert, image_ref, ConvertOptions, ConvertReport, Engine};
pub use error::{ConvertError, Result};
