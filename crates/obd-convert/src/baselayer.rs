//! The upstream baselayer `ext4_64` (a 64 GiB ext4 made by mke2fs, as a ZFile'd committed
//! LSMT layer), embedded in the binary for `--mkfs=false`, and the tar it is uploaded in.

use std::io::Read;
use std::path::Path;

use crate::error::{ConvertError, Result};

static BASELAYER_TGZ: &[u8] = include_bytes!("../../../testdata/upstream/ext4_64.tar.gz");

/// sha256 of the raw `ext4_64` file.
pub const RAW_DIGEST: &str =
    "sha256:c3a417552a6cf9ffa959b541850bab7d7f08f4255425bf8b48c85f7b36b378d9";

/// Writes the raw baselayer to `path`.
pub fn extract(path: &Path) -> Result<()> {
    let mut ar = flate2::read::GzDecoder::new(BASELAYER_TGZ);
    // A one-member tar: skip the 512-byte header, read the member's size from it.
    let mut h = [0u8; 512];
    ar.read_exact(&mut h)
        .map_err(|e| ConvertError::io("reading the embedded baselayer", e))?;
    let size_field = std::str::from_utf8(&h[124..136])
        .unwrap_or("")
        .trim_matches(|c: char| c == '\0' || c == ' ');
    let size = u64::from_str_radix(size_field, 8)
        .map_err(|_| ConvertError::BadInput("embedded baselayer tar".into()))?;
    let mut data = vec![0u8; size as usize];
    ar.read_exact(&mut data)
        .map_err(|e| ConvertError::io("reading the embedded baselayer", e))?;
    let got = crate::digest::sha256(&data);
    if got != RAW_DIGEST {
        return Err(ConvertError::BadInput(format!(
            "embedded baselayer has digest {got}"
        )));
    }
    std::fs::write(path, &data)
        .map_err(|e| ConvertError::io(format!("writing {}", path.display()), e))
}

/// The registry blob of the baselayer: a one-member tar named `overlaybd.commit` written the
/// way Go's `archive/tar` writes it (mode 0444, ids 0, mtime 0, no names), as upstream
/// uploads it. Its digest is therefore upstream's too.
pub fn upload_tar(raw: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..16].copy_from_slice(b"overlaybd.commit");
    h[100..108].copy_from_slice(b"0000444\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", raw.len()).as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[329..337].copy_from_slice(b"0000000\0");
    h[337..345].copy_from_slice(b"0000000\0");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = Vec::with_capacity(raw.len() + 2048);
    out.extend_from_slice(&h);
    out.extend_from_slice(raw);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_tar_matches_upstream_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ext4_64");
        extract(&p).unwrap();
        let t = upload_tar(&std::fs::read(&p).unwrap());
        assert_eq!(t.len(), 4_739_584);
        assert_eq!(
            crate::digest::sha256(&t),
            "sha256:a8b5fca80efae55088290f3da8110d7742de55c2a378d5ab53226a483f390e21"
        );
    }
}
