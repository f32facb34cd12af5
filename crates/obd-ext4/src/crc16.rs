//! CRC-16 (reflected polynomial 0xA001) as used by the `uninit_bg` (gdt_csum) group descriptor
//! checksum.

/// Continues a CRC-16 over `data`.
pub(crate) fn crc16(mut crc: u16, data: &[u8]) -> u16 {
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_value() {
        // CRC-16/ARC of "123456789" is 0xBB3D (init 0).
        assert_eq!(super::crc16(0, b"123456789"), 0xBB3D);
    }
}
