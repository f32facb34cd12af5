//! The LSMT header/trailer: one 4096-byte block whose first 390 bytes hold a packed struct.
//!
//! | off | size | field |
//! |---:|---:|---|
//! | 0 | 8 | magic0 `LSMT\0\1\2\0` |
//! | 8 | 16 | magic1 |
//! | 24 | 4 | size = 390 |
//! | 28 | 4 | flags (header, data file, sealed, sparse) |
//! | 32 | 8 | index_offset (bytes) |
//! | 40 | 8 | index_size (entries, padding included) |
//! | 48 | 8 | virtual_size (bytes) |
//! | 56 | 37 | uuid (upper-case string + NUL) |
//! | 93 | 37 | parent_uuid |
//! | 130 | 2 | reserved |
//! | 132 | 1 | version = 1 |
//! | 133 | 1 | sub_version = 1 |
//! | 134 | 256 | user_tag |

use crate::error::{FormatError, Result};
use crate::uuid::Uuid;

/// Size of the header and trailer blocks.
pub const HT_SPACE: u64 = 4096;
/// `sizeof(HeaderTrailer)`.
pub const HT_STRUCT_SIZE: u32 = 390;
pub const MAGIC0: [u8; 8] = *b"LSMT\0\x01\x02\0";
pub const MAGIC1: [u8; 16] = [
    0x65, 0x7E, 0x63, 0xD2, 0x94, 0x44, 0x08, 0x4C, 0xA2, 0xD2, 0xC8, 0xEC, 0x4F, 0xCF, 0xAE, 0x8A,
];

pub const FLAG_HEADER: u32 = 1;
pub const FLAG_DATA: u32 = 2;
pub const FLAG_SEALED: u32 = 4;
pub const FLAG_SPARSE: u32 = 0x10;

/// Longest commit message.
pub const USER_TAG_MAX: usize = 256;

/// The decoded header/trailer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderTrailer {
    pub flags: u32,
    pub index_offset: u64,
    pub index_size: u64,
    pub virtual_size: u64,
    pub uuid: Uuid,
    pub parent_uuid: Uuid,
    pub version: u8,
    pub sub_version: u8,
    pub user_tag: Vec<u8>,
}

impl HeaderTrailer {
    pub fn new(flags: u32, virtual_size: u64) -> Self {
        HeaderTrailer {
            flags,
            virtual_size,
            version: 1,
            sub_version: 1,
            ..Default::default()
        }
    }
    pub fn is_header(&self) -> bool {
        self.flags & FLAG_HEADER != 0
    }
    pub fn is_data_file(&self) -> bool {
        self.flags & FLAG_DATA != 0
    }
    pub fn is_sealed(&self) -> bool {
        self.flags & FLAG_SEALED != 0
    }
    pub fn is_sparse(&self) -> bool {
        self.flags & FLAG_SPARSE != 0
    }

    /// True if `block` starts with both LSMT magic numbers.
    pub fn has_magic(block: &[u8]) -> bool {
        block.len() >= 24 && block[..8] == MAGIC0 && block[8..24] == MAGIC1
    }

    /// Encodes into a zero-filled 4096-byte block.
    pub fn encode(&self) -> Result<[u8; HT_SPACE as usize]> {
        if self.user_tag.len() > USER_TAG_MAX {
            return Err(FormatError::Invalid(format!(
                "commit message is {} bytes; at most {USER_TAG_MAX} fit",
                self.user_tag.len()
            )));
        }
        let mut b = [0u8; HT_SPACE as usize];
        b[0..8].copy_from_slice(&MAGIC0);
        b[8..24].copy_from_slice(&MAGIC1);
        b[24..28].copy_from_slice(&HT_STRUCT_SIZE.to_le_bytes());
        b[28..32].copy_from_slice(&self.flags.to_le_bytes());
        b[32..40].copy_from_slice(&self.index_offset.to_le_bytes());
        b[40..48].copy_from_slice(&self.index_size.to_le_bytes());
        b[48..56].copy_from_slice(&self.virtual_size.to_le_bytes());
        b[56..93].copy_from_slice(&self.uuid.to_field());
        b[93..130].copy_from_slice(&self.parent_uuid.to_field());
        b[132] = self.version;
        b[133] = self.sub_version;
        b[134..134 + self.user_tag.len()].copy_from_slice(&self.user_tag);
        Ok(b)
    }

    /// Decodes a block (at least 390 bytes), checking only the magic numbers.
    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < HT_STRUCT_SIZE as usize {
            return Err(FormatError::magic(
                "LSMT file",
                format!("only {} bytes where a 4096-byte header belongs", b.len()),
            ));
        }
        if !Self::has_magic(b) {
            return Err(FormatError::magic(
                "LSMT file",
                "magic numbers do not match",
            ));
        }
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let tag = &b[134..390];
        let tag_len = tag.iter().position(|&c| c == 0).unwrap_or(tag.len());
        Ok(HeaderTrailer {
            flags: u32_at(28),
            index_offset: u64_at(32),
            index_size: u64_at(40),
            virtual_size: u64_at(48),
            uuid: Uuid::from_field(&b[56..93]),
            parent_uuid: Uuid::from_field(&b[93..130]),
            version: b[132],
            sub_version: b[133],
            user_tag: tag[..tag_len].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = HeaderTrailer::new(FLAG_HEADER | FLAG_DATA | FLAG_SEALED, 64 << 30);
        h.uuid = Uuid::parse("C02FB491-B4D4-4904-8684-A014D032AF78").unwrap();
        h.user_tag = b"hello".to_vec();
        let b = h.encode().unwrap();
        assert_eq!(&b[56..93], b"C02FB491-B4D4-4904-8684-A014D032AF78\0");
        assert_eq!(&b[93..129], b"00000000-0000-0000-0000-000000000000");
        assert_eq!(HeaderTrailer::decode(&b).unwrap(), h);
        h.user_tag = vec![b'x'; 257];
        assert!(h.encode().is_err());
    }
}
