//! The 16-byte LSMT index entry.
//!
//! Two little-endian u64 words: `lo = offset(50 bits) | length(14 bits) << 50` and
//! `hi = moffset(55 bits) | zeroed << 55 | tag << 56`. Offsets and lengths are in sectors.

/// `offset` of the padding ("invalid") entry.
pub const INVALID_OFFSET: u64 = (1 << 50) - 1;
const OFFSET_MASK: u64 = (1 << 50) - 1;
const MOFFSET_MASK: u64 = (1 << 55) - 1;

/// One mapping: `length` sectors at virtual sector `offset` are stored at sector `moffset`
/// of the layer's file, or read as zeros when `zeroed`. `tag` names the source file in a
/// stack or merge (0 on disk for ordinary committed layers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Segment {
    pub offset: u64,
    pub length: u32,
    pub moffset: u64,
    pub zeroed: bool,
    pub tag: u8,
}

impl Segment {
    pub const fn new(offset: u64, length: u32, moffset: u64) -> Self {
        Segment {
            offset,
            length,
            moffset,
            zeroed: false,
            tag: 0,
        }
    }
    pub const fn zeroed(offset: u64, length: u32, moffset: u64) -> Self {
        Segment {
            offset,
            length,
            moffset,
            zeroed: true,
            tag: 0,
        }
    }
    /// The padding entry of committed indexes.
    pub const INVALID: Segment = Segment {
        offset: INVALID_OFFSET,
        length: 0,
        moffset: 0,
        zeroed: false,
        tag: 0,
    };

    /// One past the last virtual sector.
    pub fn end(&self) -> u64 {
        self.offset + self.length as u64
    }
    /// One past the last stored sector (`moffset` itself when zeroed).
    pub fn mend(&self) -> u64 {
        if self.zeroed {
            self.moffset
        } else {
            self.moffset + self.length as u64
        }
    }
    pub fn is_invalid(&self) -> bool {
        self.offset == INVALID_OFFSET
    }

    /// Drops the first `delta` sectors (the data position moves with it unless zeroed).
    pub fn forward(&mut self, delta: u64) {
        debug_assert!(delta <= self.length as u64);
        self.offset += delta;
        self.length -= delta as u32;
        if !self.zeroed {
            self.moffset += delta;
        }
    }
    /// Keeps only the part within `[begin, end)`; returns `None` if nothing is left.
    pub fn clip(mut self, begin: u64, end: u64) -> Option<Segment> {
        if self.end() <= begin || self.offset >= end {
            return None;
        }
        if self.offset < begin {
            self.forward(begin - self.offset);
        }
        if self.end() > end {
            self.length = (end - self.offset) as u32;
        }
        Some(self)
    }

    pub fn encode(&self) -> [u8; 16] {
        let lo = (self.offset & OFFSET_MASK) | ((self.length as u64) << 50);
        let hi = (self.moffset & MOFFSET_MASK)
            | ((self.zeroed as u64) << 55)
            | ((self.tag as u64) << 56);
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&lo.to_le_bytes());
        out[8..].copy_from_slice(&hi.to_le_bytes());
        out
    }

    pub fn decode(b: &[u8; 16]) -> Segment {
        let lo = u64::from_le_bytes(b[..8].try_into().unwrap());
        let hi = u64::from_le_bytes(b[8..].try_into().unwrap());
        Segment {
            offset: lo & OFFSET_MASK,
            length: (lo >> 50) as u32,
            moffset: hi & MOFFSET_MASK,
            zeroed: (hi >> 55) & 1 == 1,
            tag: (hi >> 56) as u8,
        }
    }

    /// Decodes a packed array of entries (length must be a multiple of 16).
    pub fn decode_all(bytes: &[u8]) -> Vec<Segment> {
        bytes
            .chunks_exact(16)
            .map(|c| Segment::decode(c.try_into().unwrap()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn upstream_encodings() {
        assert_eq!(
            hex(&Segment::new(0, 8272, 8).encode()),
            "00000000000040810800000000000000"
        );
        assert_eq!(
            hex(&Segment::zeroed(8272, 120, 8280).encode()),
            "502000000000e0015820000000008000"
        );
        assert_eq!(
            hex(&Segment::INVALID.encode()),
            "ffffffffffff03000000000000000000"
        );
        let s = Segment {
            offset: 123456789,
            length: 16383,
            moffset: (1 << 55) - 1,
            zeroed: true,
            tag: 200,
        };
        assert_eq!(Segment::decode(&s.encode()), s);
    }
}
