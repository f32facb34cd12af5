//! Gzip random-access index (`gzip.meta`, TurboOCIv1): building it while decompressing a
//! layer once, and reading any byte range of the gzip blob through it.
//!
//! * [`meta`]: the file format (header, entries, windows) and its checked parser.
//! * [`builder`]: [`GzIndexReader`], a `Read` adapter that yields the decompressed stream and
//!   records the index (first gzip member only, as upstream).
//! * [`reader`]: [`GzIndexedFile`], a [`ReadAt`](crate::io::ReadAt) over the gzip blob.
//! * `zstream`: the one module with `unsafe`: a small safe wrapper over zlib's inflate API.

pub mod builder;
pub mod meta;
pub mod reader;
mod zstream;

pub use builder::{GzIndexBuild, GzIndexOptions, GzIndexReader};
pub use meta::{DictCompression, GzIndex, GzIndexEntry, GzIndexHeader};
pub use reader::GzIndexedFile;

#[cfg(test)]
mod tests;
