//! Detects the compression of a layer stream by its first bytes and decompresses it.

use std::io::{self, BufRead, BufReader, Read};

/// How a layer stream is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Looks at the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `r` in the right decoder. Gzip streams with several members are read to the end.
pub fn decompress<'a, R: Read + Send + 'a>(
    r: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let mut br = BufReader::with_capacity(1 << 20, r);
    let head = br.fill_buf()?;
    let c = Compression::detect(head);
    let out: Box<dyn Read + Send + 'a> = match c {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(br)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(br)?),
        Compression::None => Box::new(br),
    };
    Ok((c, out))
}
