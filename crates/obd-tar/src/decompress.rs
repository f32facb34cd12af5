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
///
/// Errors keep their cause apart: an error of `r` itself (disk, network) comes out as it
/// was, and everything the decoder objects to (corrupt or truncated compressed data) comes
/// out as [`io::ErrorKind::InvalidData`], so callers can tell bad input from failed I/O.
pub fn decompress<'a, R: Read + Send + 'a>(
    r: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let mut br = BufReader::with_capacity(1 << 20, Source(r));
    let head = br.fill_buf().map_err(untag)?;
    let c = Compression::detect(head);
    let out: Box<dyn Read + Send + 'a> = match c {
        Compression::Gzip => Box::new(Decoded {
            inner: flate2::bufread::MultiGzDecoder::new(br),
            what: "gzip",
        }),
        Compression::Zstd => Box::new(Decoded {
            inner: zstd::stream::read::Decoder::with_buffer(br).map_err(untag)?,
            what: "zstd",
        }),
        Compression::None => Box::new(Untagged(br)),
    };
    Ok((c, out))
}

/// An error of the compressed stream's own reader, carried through a decoder.
#[derive(Debug)]
struct SourceError(io::Error);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {}

/// Tags the errors of the compressed stream's reader.
struct Source<R>(R);

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), SourceError(e)))
    }
}

/// The original error of a tagged one; `None` for any other error.
fn source_error(e: io::Error) -> Result<io::Error, io::Error> {
    if e.get_ref().is_some_and(|i| i.is::<SourceError>()) {
        let inner = e.into_inner().expect("checked above");
        Ok(inner.downcast::<SourceError>().expect("checked above").0)
    } else {
        Err(e)
    }
}

fn untag(e: io::Error) -> io::Error {
    source_error(e).unwrap_or_else(|e| e)
}

/// A plain stream: its errors are the reader's own.
struct Untagged<R>(R);

impl<R: Read> Read for Untagged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(untag)
    }
}

/// A decoder whose own errors become `InvalidData` naming the format.
struct Decoded<D> {
    inner: D,
    what: &'static str,
}

impl<D: Read> Read for Decoded<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| {
            source_error(e).unwrap_or_else(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt {} data: {e}", self.what),
                )
            })
        })
    }
}

/// Chunk size and depth of [`read_ahead`].
const AHEAD_CHUNK: u64 = 1 << 20;
const AHEAD_DEPTH: usize = 4;

/// Reads `r` to its end on a scoped thread of its own, 1 MiB at a time and a few chunks
/// ahead, while `consume` reads the same bytes from the [`Chunks`] it is given: whatever
/// `r` does (decompressing, hashing) runs in parallel with the consumer. Returns what
/// `consume` returned, and whether the thread reached the end of `r` (not when `consume`
/// stopped reading early or `r` failed).
pub fn read_ahead<R: Read + Send, T>(
    r: &mut R,
    consume: impl FnOnce(&mut Chunks) -> T,
) -> (T, bool) {
    std::thread::scope(|sc| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(AHEAD_DEPTH);
        let (back, back_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let producer = sc.spawn(move || -> bool {
            loop {
                let mut buf = back_rx.try_recv().unwrap_or_default();
                buf.clear();
                let (msg, last) = match (&mut *r).take(AHEAD_CHUNK).read_to_end(&mut buf) {
                    Ok(n) => (Ok(buf), n == 0),
                    Err(e) => (Err(e), true),
                };
                let failed = msg.is_err();
                if tx.send(msg).is_err() || failed {
                    return false;
                }
                if last {
                    return true;
                }
            }
        });
        let mut chunks = Chunks {
            rx,
            back,
            cur: Vec::new(),
            pos: 0,
            done: false,
        };
        let out = consume(&mut chunks);
        drop(chunks);
        (out, producer.join().unwrap_or(false))
    })
}

/// The consumer's side of [`read_ahead`]: the chunks in order (an empty one marks the end);
/// spent buffers go back to the reading thread.
pub struct Chunks {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    back: std::sync::mpsc::Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for Chunks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.done = b.is_empty();
                    let spent = std::mem::replace(&mut self.cur, b);
                    if spent.capacity() > 0 {
                        let _ = self.back.send(spent);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the read-ahead thread stopped",
                    ));
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte arrives in order whatever the reads' sizes; an error of the source
    /// reaches the consumer; a consumer that stops early stops the thread.
    #[test]
    fn read_ahead_passes_bytes_errors_and_early_stops() {
        let data: Vec<u8> = (0..(3 << 20) + 12345).map(|i| (i % 251) as u8).collect();
        let mut src = &data[..];
        let (got, whole) = read_ahead(&mut src, |c| {
            let mut v = Vec::new();
            let mut b = vec![0u8; 7777];
            loop {
                let n = c.read(&mut b).unwrap();
                if n == 0 {
                    break v;
                }
                v.extend_from_slice(&b[..n]);
            }
        });
        assert!(whole);
        assert!(got == data);

        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt"));
                }
                let n = b.len().min(self.0);
                b[..n].fill(7);
                self.0 -= n;
                Ok(n)
            }
        }
        let (e, whole) = read_ahead(&mut Failing(5 << 20), |c| {
            io::copy(c, &mut io::sink()).unwrap_err()
        });
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(!whole);

        let mut endless = io::repeat(1);
        let (n, whole) = read_ahead(&mut endless, |c| c.read(&mut [0u8; 10]).unwrap());
        assert_eq!(n, 10);
        assert!(!whole, "the thread stops once the consumer is gone");
    }
}
