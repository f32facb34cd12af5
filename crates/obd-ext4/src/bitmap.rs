//! A fixed-size bit vector for block and inode bitmaps, with the searches the next-fit
//! allocators need.

/// Bits stored little-endian within bytes, as on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    len: usize,
}

impl Bitmap {
    pub fn new(len: usize) -> Self {
        Bitmap {
            words: vec![0; len.div_ceil(64)],
            len,
        }
    }

    /// Loads the first `len` bits of an on-disk bitmap block.
    pub fn from_bytes(b: &[u8], len: usize) -> Self {
        let mut bm = Bitmap::new(len);
        for (i, w) in bm.words.iter_mut().enumerate() {
            let mut v = [0u8; 8];
            for (j, x) in v.iter_mut().enumerate() {
                *x = b.get(i * 8 + j).copied().unwrap_or(0);
            }
            *w = u64::from_le_bytes(v);
        }
        bm.clear_tail();
        bm
    }

    fn clear_tail(&mut self) {
        if self.len % 64 != 0 {
            if let Some(last) = self.words.last_mut() {
                *last &= (1u64 << (self.len % 64)) - 1;
            }
        }
    }

    /// The on-disk block: the bits, then padding set to one up to `block_size`.
    pub fn to_block(&self, block_size: usize) -> Vec<u8> {
        let mut out = vec![0xFFu8; block_size];
        let full = (self.len / 8).min(block_size);
        for (i, w) in self.words.iter().enumerate() {
            let bytes = w.to_le_bytes();
            let start = i * 8;
            if start >= full {
                break;
            }
            let n = (full - start).min(8);
            out[start..start + n].copy_from_slice(&bytes[..n]);
        }
        for i in full * 8..self.len.min(block_size * 8) {
            if !self.get(i) {
                out[i / 8] &= !(1 << (i % 8));
            }
        }
        out
    }

    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / 64] >> (i % 64) & 1 != 0
    }

    pub fn set(&mut self, i: usize) {
        if i < self.len {
            self.words[i / 64] |= 1 << (i % 64);
        }
    }

    pub fn clear(&mut self, i: usize) {
        if i < self.len {
            self.words[i / 64] &= !(1 << (i % 64));
        }
    }

    pub fn set_range(&mut self, start: usize, n: usize) {
        let end = (start + n).min(self.len);
        let mut i = start;
        while i < end {
            if i % 64 == 0 && i + 64 <= end {
                self.words[i / 64] = u64::MAX;
                i += 64;
            } else {
                self.set(i);
                i += 1;
            }
        }
    }

    /// First clear bit at or after `from`.
    pub fn find_zero(&self, from: usize) -> Option<usize> {
        if from >= self.len {
            return None;
        }
        let mut wi = from / 64;
        let mut w = self.words[wi] | ((1u64 << (from % 64)) - 1);
        loop {
            if w != u64::MAX {
                let i = wi * 64 + w.trailing_ones() as usize;
                return (i < self.len).then_some(i);
            }
            wi += 1;
            if wi >= self.words.len() {
                return None;
            }
            w = self.words[wi];
        }
    }

    /// Length of the run of clear bits starting at `from`, at most `max`.
    pub fn zero_run(&self, from: usize, max: usize) -> usize {
        let mut n = 0;
        while n < max && from + n < self.len {
            let i = from + n;
            if i % 64 == 0 && self.words[i / 64] == 0 && n + 64 <= max && i + 64 <= self.len {
                n += 64;
                continue;
            }
            if self.get(i) {
                break;
            }
            n += 1;
        }
        n
    }

    #[cfg(test)]
    pub fn count_ones(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_and_padding() {
        let mut b = Bitmap::new(200);
        b.set_range(0, 70);
        assert_eq!(b.find_zero(0), Some(70));
        assert_eq!(b.zero_run(70, 1000), 130);
        b.set(150);
        assert_eq!(b.zero_run(70, 1000), 80);
        assert_eq!(b.count_ones(), 71);
        let blk = b.to_block(64);
        assert_eq!(blk[25], 0xFF); // padding past bit 200
        let c = Bitmap::from_bytes(&blk, 200);
        assert_eq!(c, b);
        b.set_range(0, 200);
        assert_eq!(b.find_zero(0), None);
    }
}
