//! The CRC32C variant overlaybd uses: Castagnoli polynomial, **no** initial inversion and
//! **no** final XOR ("raw"), with a caller-given seed (0 for digests and indexes, 100007
//! for ZFile blocks).

/// Seed used for the per-block CRC of ZFile data blocks.
pub const ZFILE_BLOCK_SEED: u32 = 100_007;

/// Raw CRC32C of `data` continuing from `seed`.
pub fn crc32c_raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors() {
        assert_eq!(crc32c_raw(0, b"123456789"), 0x58E3_FA20);
        assert_eq!(crc32c_raw(100_007, b"123456789"), 0x3C9B_D4E0);
        // LZ4 block of 4096 x 0xFF, as found in the upstream baselayer.
        let mut b = vec![0x1f, 0xff, 0x01, 0x00];
        b.extend(std::iter::repeat_n(0xff, 15));
        b.extend([0xf6, 0x50, 0xff, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(crc32c_raw(ZFILE_BLOCK_SEED, &b), 0xD0B7_354E);
    }
}
