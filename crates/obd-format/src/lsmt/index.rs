//! Index algorithms: lookup over a sorted index, gap-filling merges across layers,
//! the writable in-memory index ([`Index0`]) and the compression used by commits.

use std::collections::BTreeMap;

use super::segment::Segment;
use super::MAX_LENGTH;
use crate::error::{FormatError, Result};

/// The pieces of a sorted, non-overlapping `index` that intersect `[begin, end)` (sectors),
/// clipped to that range, in order.
pub fn lookup(index: &[Segment], begin: u64, end: u64) -> impl Iterator<Item = Segment> + '_ {
    let start = index.partition_point(|s| s.end() <= begin);
    index[start..]
        .iter()
        .take_while(move |s| s.offset < end)
        .filter_map(move |s| s.clip(begin, end))
}

/// Merges layer indexes given **top first**: every part of `[begin, end)` takes the mapping of
/// the highest layer that maps it (zeroed entries included), and gets `tag` = the level
/// (0 = top). Unmapped parts stay unmapped.
pub fn merge(layers: &[&[Segment]], begin: u64, end: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    merge_into(layers, 0, begin, end, &mut out);
    out
}

fn merge_into(layers: &[&[Segment]], level: usize, begin: u64, end: u64, out: &mut Vec<Segment>) {
    if level >= layers.len() || begin >= end {
        return;
    }
    let mut cursor = begin;
    for mut s in lookup(layers[level], begin, end) {
        if s.offset > cursor {
            merge_into(layers, level + 1, cursor, s.offset, out);
        }
        cursor = s.end();
        s.tag = level as u8;
        out.push(s);
    }
    if cursor < end {
        merge_into(layers, level + 1, cursor, end, out);
    }
}

/// Greedy left-to-right merge of adjacent entries, exactly as upstream's
/// `compress_raw_index`: entries join when contiguous in both spaces, alike in `zeroed` and
/// `tag`, and the joined length stays strictly below 16383.
pub fn compress(v: &mut Vec<Segment>) {
    if v.is_empty() {
        return;
    }
    let mut i = 0;
    for j in 1..v.len() {
        let (a, b) = (v[i], v[j]);
        if a.end() == b.offset
            && a.mend() == b.moffset
            && a.zeroed == b.zeroed
            && a.tag == b.tag
            && a.length + b.length < MAX_LENGTH
        {
            v[i].length += b.length;
        } else {
            i += 1;
            v[i] = b;
        }
    }
    v.truncate(i + 1);
}

/// Checks what upstream checks of a committed index: strictly sorted, no overlap, lengths
/// in 1..=16383, and data entries inside `[moffset_begin, moffset_end)` sectors.
pub fn validate(
    index: &[Segment],
    moffset_begin: u64,
    moffset_end: u64,
    vsize_sectors: u64,
) -> Result<()> {
    let mut prev_end = 0u64;
    for (i, s) in index.iter().enumerate() {
        let bad = |d: String| FormatError::corrupt("LSMT index", format!("entry {i} {s:?}: {d}"));
        if s.length == 0 || s.length > MAX_LENGTH {
            return Err(bad("length out of range".into()));
        }
        if i > 0 && s.offset < prev_end {
            return Err(bad("not sorted or overlaps the previous entry".into()));
        }
        if vsize_sectors != 0 && s.end() > vsize_sectors {
            return Err(bad(format!(
                "maps past the virtual size ({vsize_sectors} sectors)"
            )));
        }
        if !s.zeroed && (s.moffset < moffset_begin || s.moffset + s.length as u64 > moffset_end) {
            return Err(bad(format!(
                "data outside the layer's data area [{moffset_begin}, {moffset_end}) sectors"
            )));
        }
        prev_end = s.end();
    }
    Ok(())
}

/// The in-memory index of a writable layer: later inserts override the overlapped parts of
/// earlier ones (upstream `Index0::insert`).
#[derive(Clone, Debug, Default)]
pub struct Index0 {
    map: BTreeMap<u64, Segment>,
}

impl Index0 {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.map.len()
    }
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn insert(&mut self, seg: Segment) {
        if seg.length == 0 {
            return;
        }
        self.remove_range(seg.offset, seg.end());
        self.map.insert(seg.offset, seg);
    }

    /// Unmaps `[b, e)`, trimming mappings that straddle its edges.
    pub fn remove_range(&mut self, b: u64, e: u64) {
        let mut hit = Vec::new();
        for (&k, s) in self.map.range(..e).rev() {
            if s.end() <= b {
                break;
            }
            hit.push(k);
        }
        for k in hit {
            let s = self.map.remove(&k).unwrap();
            if let Some(left) = s.clip(s.offset, b) {
                self.map.insert(left.offset, left);
            }
            if let Some(right) = s.clip(e, s.end()) {
                self.map.insert(right.offset, right);
            }
        }
    }

    /// All mappings, sorted by offset.
    pub fn dump(&self) -> Vec<Segment> {
        self.map.values().copied().collect()
    }

    /// Mappings intersecting `[begin, end)`, clipped.
    pub fn lookup(&self, begin: u64, end: u64) -> impl Iterator<Item = Segment> + '_ {
        let first = self
            .map
            .range(..=begin)
            .next_back()
            .filter(|(_, s)| s.end() > begin)
            .map(|(&k, _)| k)
            .unwrap_or(begin);
        self.map
            .range(first..end)
            .filter_map(move |(_, s)| s.clip(begin, end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(o: u64, l: u32, m: u64) -> Segment {
        Segment::new(o, l, m)
    }

    #[test]
    fn upstream_lookup_vectors() {
        let idx = [s(0, 10, 0), s(10, 10, 50), s(100, 10, 20)];
        let got: Vec<_> = lookup(&idx, 5, 15).collect();
        assert_eq!(got, vec![s(5, 5, 5), s(10, 5, 50)]);
        let got: Vec<_> = lookup(&idx, 16, 26).collect();
        assert_eq!(got, vec![s(16, 4, 56)]);
        let got: Vec<_> = lookup(&idx, 6, 106).collect();
        assert_eq!(got, vec![s(6, 4, 6), s(10, 10, 50), s(100, 6, 20)]);
    }

    #[test]
    fn upstream_insert_vectors() {
        let mut i0 = Index0::new();
        for x in [
            s(0, 20, 0),
            s(10, 15, 50),
            s(30, 100, 20),
            s(5, 10, 3),
            s(40, 10, 123),
            s(200, 10, 2133),
            s(150, 100, 21),
        ] {
            i0.insert(x);
        }
        assert_eq!(
            i0.dump(),
            vec![
                s(0, 5, 0),
                s(5, 10, 3),
                s(15, 10, 55),
                s(30, 10, 20),
                s(40, 10, 123),
                s(50, 80, 40),
                s(150, 100, 21)
            ]
        );
        let got: Vec<_> = i0.lookup(3, 17).collect();
        assert_eq!(got, vec![s(3, 2, 3), s(5, 10, 3), s(15, 2, 55)]);
    }

    #[test]
    fn upstream_compress_vectors() {
        let mut t = s(20, 10, 15);
        t.tag = 1;
        let mut v = vec![s(5, 5, 0), s(10, 10, 5), t, s(100, 10, 20)];
        compress(&mut v);
        assert_eq!(v, vec![s(5, 15, 0), t, s(100, 10, 20)]);
        // 16320 = 255 * 64 is where 64-sector copy steps stop merging.
        let mut v: Vec<_> = (0..300).map(|i| s(i * 64, 64, 8 + i * 64)).collect();
        compress(&mut v);
        assert_eq!(v[0].length, 16320);
        assert_eq!(v[1].offset, 16320);
    }

    #[test]
    fn merge_fills_gaps_top_first() {
        let top = [s(10, 10, 100), Segment::zeroed(30, 5, 8)];
        let bot = [s(0, 40, 1000)];
        let m = merge(&[&top, &bot], 0, 50);
        let tags: Vec<_> = m
            .iter()
            .map(|x| (x.offset, x.length, x.moffset, x.tag, x.zeroed))
            .collect();
        assert_eq!(
            tags,
            vec![
                (0, 10, 1000, 1, false),
                (10, 10, 100, 0, false),
                (20, 10, 1020, 1, false),
                (30, 5, 8, 0, true),
                (35, 5, 1035, 1, false)
            ]
        );
    }
}
