//! Little-endian field access on fixed-layout byte buffers (superblock, descriptors, inodes,
//! directory and xattr blocks). Callers guarantee the offsets are inside the buffer.

pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub(crate) fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// True when every byte is zero (uses the slice comparison, which is a memcmp even in debug
/// builds).
pub(crate) fn is_zero(b: &[u8]) -> bool {
    const Z: [u8; 4096] = [0; 4096];
    b.chunks(Z.len()).all(|c| c == &Z[..c.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut b = [0u8; 16];
        put16(&mut b, 0, 0xbeef);
        put32(&mut b, 2, 0xdead_cafe);
        put64(&mut b, 6, 0x0102_0304_0506_0708);
        let le64 = |b: &[u8], o| u64::from(le32(b, o)) | (u64::from(le32(b, o + 4)) << 32);
        assert_eq!(le16(&b, 0), 0xbeef);
        assert_eq!(le32(&b, 2), 0xdead_cafe);
        assert_eq!(le64(&b, 6), 0x0102_0304_0506_0708);
        assert!(!is_zero(&b));
        assert!(is_zero(&[0u8; 10000]));
    }
}
