//! sha256 digests (`sha256:<hex>`), chain IDs, and readers/writers that hash as they go.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of bytes.
pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Checks that `d` is `sha256:` followed by 64 lower-case hex digits.
pub fn valid(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    })
}

/// The hex part of a digest.
pub fn hex_of(d: &str) -> &str {
    d.split_once(':').map(|(_, h)| h).unwrap_or(d)
}

/// OCI chain IDs of a list of diff IDs: `chain[0] = diff[0]`,
/// `chain[i] = sha256("<chain[i-1]> <diff[i]>")`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

pub use obd_tar::HashReader;

/// A writer that hashes what passes through.
pub struct HashWriter<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hash: Sha256::new(),
            bytes: 0,
        }
    }
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hash.finalize())),
            self.bytes,
        )
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes a file (1 MiB reads).
pub fn sha256_file(path: &std::path::Path) -> io::Result<(String, u64)> {
    use io::Read;
    let mut f = std::fs::File::open(path)?;
    let (mut h, mut buf, mut bytes) = (Sha256::new(), vec![0u8; 1 << 20], 0u64);
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                bytes += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((format!("sha256:{}", hex::encode(h.finalize())), bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain() {
        let d = vec!["sha256:aaaa".to_string(), "sha256:bbbb".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:aaaa");
        assert_eq!(c[1], sha256(b"sha256:aaaa sha256:bbbb"));
        assert!(valid(&c[1]));
        assert!(!valid("sha256:xyz"));
    }
}
