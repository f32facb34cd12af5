//! Block group descriptors: parsing, serialising (32- or 64-byte), the `uninit_bg` flags and
//! the CRC-16 descriptor checksum.

use crate::bytes::{le16, le32, put16, put32};
use crate::crc16::crc16;

/// The inode table and bitmap of this group were never initialised.
pub const BG_INODE_UNINIT: u16 = 0x1;
/// The block bitmap of this group was never initialised.
pub const BG_BLOCK_UNINIT: u16 = 0x2;

const CHECKSUM_OFF: usize = 0x1E;

/// One group descriptor, with its raw bytes kept for fields the engine does not interpret.
#[derive(Clone, Debug)]
pub(crate) struct GroupDesc {
    pub raw: Vec<u8>,
    pub block_bitmap: u64,
    pub inode_bitmap: u64,
    pub inode_table: u64,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    pub flags: u16,
    pub itable_unused: u32,
}

fn hl32(raw: &[u8], lo: usize, hi: usize) -> u64 {
    let h = if raw.len() >= 64 {
        u64::from(le32(raw, hi))
    } else {
        0
    };
    u64::from(le32(raw, lo)) | (h << 32)
}

fn hl16(raw: &[u8], lo: usize, hi: usize) -> u32 {
    let h = if raw.len() >= 64 {
        u32::from(le16(raw, hi))
    } else {
        0
    };
    u32::from(le16(raw, lo)) | (h << 16)
}

impl GroupDesc {
    pub fn parse(raw: &[u8]) -> Self {
        GroupDesc {
            raw: raw.to_vec(),
            block_bitmap: hl32(raw, 0x00, 0x20),
            inode_bitmap: hl32(raw, 0x04, 0x24),
            inode_table: hl32(raw, 0x08, 0x28),
            free_blocks: hl16(raw, 0x0C, 0x2C),
            free_inodes: hl16(raw, 0x0E, 0x2E),
            used_dirs: hl16(raw, 0x10, 0x30),
            flags: le16(raw, 0x12),
            itable_unused: hl16(raw, 0x1C, 0x32),
        }
    }

    pub fn new(desc_size: usize) -> Self {
        GroupDesc::parse(&vec![0u8; desc_size])
    }

    /// Serialises the fields into the raw bytes and, when `csum` is given (uuid, group), sets
    /// the gdt_csum checksum.
    pub fn serialize(&mut self, csum: Option<(&[u8; 16], u32)>) -> &[u8] {
        let big = self.raw.len() >= 64;
        let r = &mut self.raw;
        let p32 = |r: &mut Vec<u8>, lo: usize, hi: usize, v: u64| {
            put32(r, lo, v as u32);
            if big {
                put32(r, hi, (v >> 32) as u32);
            }
        };
        p32(r, 0x00, 0x20, self.block_bitmap);
        p32(r, 0x04, 0x24, self.inode_bitmap);
        p32(r, 0x08, 0x28, self.inode_table);
        let p16 = |r: &mut Vec<u8>, lo: usize, hi: usize, v: u32| {
            put16(r, lo, v as u16);
            if big {
                put16(r, hi, (v >> 16) as u16);
            }
        };
        p16(r, 0x0C, 0x2C, self.free_blocks);
        p16(r, 0x0E, 0x2E, self.free_inodes);
        p16(r, 0x10, 0x30, self.used_dirs);
        put16(r, 0x12, self.flags);
        p16(r, 0x1C, 0x32, self.itable_unused);
        if let Some((uuid, group)) = csum {
            let c = checksum(r, uuid, group);
            put16(r, CHECKSUM_OFF, c);
        }
        &self.raw
    }

    pub fn stored_checksum(&self) -> u16 {
        le16(&self.raw, CHECKSUM_OFF)
    }
}

/// The gdt_csum checksum of descriptor bytes `raw` of group `group`.
pub(crate) fn checksum(raw: &[u8], uuid: &[u8; 16], group: u32) -> u16 {
    let mut c = crc16(0xFFFF, uuid);
    c = crc16(c, &group.to_le_bytes());
    c = crc16(c, &raw[..CHECKSUM_OFF]);
    if raw.len() > CHECKSUM_OFF + 2 {
        c = crc16(c, &raw[CHECKSUM_OFF + 2..]);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_64() {
        let mut d = GroupDesc::new(64);
        d.block_bitmap = 0x1_0000_0001;
        d.inode_bitmap = 7;
        d.inode_table = 0x2_0000_0000;
        d.free_blocks = 0x12345;
        d.free_inodes = 8192;
        d.used_dirs = 3;
        d.flags = 0x4;
        d.itable_unused = 100;
        let raw = d.serialize(Some((&[1; 16], 5))).to_vec();
        let e = GroupDesc::parse(&raw);
        assert_eq!(e.block_bitmap, 0x1_0000_0001);
        assert_eq!(e.inode_table, 0x2_0000_0000);
        assert_eq!(e.free_blocks, 0x12345);
        assert_eq!(e.itable_unused, 100);
        assert_eq!(e.stored_checksum(), checksum(&raw, &[1; 16], 5));
    }
}
