//! Directory blocks: parsing entries out of any directory block, and serialising a directory
//! either as one linear block or as an htree (dx_root in block 0, optional second index level)
//! that keeps the leaf layout of the previous version so that unchanged leaves stay
//! byte-identical.

use std::ops::Range;

use crate::bytes::{le16, le32, put16, put32};
use crate::error::{Error, Result};

/// Longest file name.
pub const NAME_MAX: usize = 255;

/// One name in a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DirEnt {
    pub ino: u32,
    pub ftype: u8,
}

/// Bytes a directory entry with a name of `name_len` bytes needs.
pub(crate) fn rec_size(name_len: usize) -> usize {
    (8 + name_len + 3) & !3
}

/// Parses every live entry (including `.` and `..`) of one directory block.
pub(crate) fn parse_block(
    buf: &[u8],
    dir: u32,
    inodes_count: u32,
) -> Result<Vec<(Vec<u8>, DirEnt)>> {
    let bad = |off: usize, why: &str| Error::BadDirectory {
        ino: dir,
        reason: format!("{why} at offset {off}"),
    };
    let mut out = Vec::new();
    let mut off = 0;
    while off < buf.len() {
        if off + 8 > buf.len() {
            return Err(bad(off, "truncated entry"));
        }
        let ino = le32(buf, off);
        let rec_len = usize::from(le16(buf, off + 4));
        let name_len = usize::from(buf[off + 6]);
        let ftype = buf[off + 7];
        if rec_len < 8 || rec_len % 4 != 0 || off + rec_len > buf.len() || 8 + name_len > rec_len {
            return Err(bad(off, "bad rec_len"));
        }
        if ino != 0 {
            if name_len == 0 {
                return Err(bad(off, "empty name"));
            }
            if ino > inodes_count {
                return Err(bad(off, "inode number out of range"));
            }
            out.push((
                buf[off + 8..off + 8 + name_len].to_vec(),
                DirEnt { ino, ftype },
            ));
        }
        off += rec_len;
    }
    Ok(out)
}

fn put_entry(b: &mut [u8], off: usize, ino: u32, rec_len: usize, name: &[u8], ftype: u8) {
    put32(b, off, ino);
    put16(b, off + 4, rec_len as u16);
    b[off + 6] = name.len() as u8;
    b[off + 7] = ftype;
    b[off + 8..off + 8 + name.len()].copy_from_slice(name);
}

/// Writes entries one after another from `off`; the last one's rec_len reaches the end of
/// the block. With no entries, an empty record covers the rest.
fn fill_entries<'a>(
    b: &mut [u8],
    mut off: usize,
    entries: impl Iterator<Item = (&'a [u8], DirEnt)>,
) {
    let end = b.len();
    let mut last: Option<usize> = None;
    for (name, e) in entries {
        let sz = rec_size(name.len());
        put_entry(b, off, e.ino, sz, name, e.ftype);
        last = Some(off);
        off += sz;
    }
    match last {
        Some(l) => put16(b, l + 4, (end - l) as u16),
        None => put_entry(b, off, 0, end - off, b"", 0),
    }
}

/// One linear block holding `.`, `..` and the entries, or `None` if they do not fit.
pub(crate) fn build_linear<'a>(
    dir: u32,
    parent: u32,
    entries: impl Iterator<Item = (&'a [u8], DirEnt)> + Clone,
    bs: usize,
) -> Option<Vec<u8>> {
    let need: usize = 24
        + entries
            .clone()
            .map(|(n, _)| rec_size(n.len()))
            .sum::<usize>();
    if need > bs {
        return None;
    }
    let mut b = vec![0u8; bs];
    put_entry(&mut b, 0, dir, 12, b".", 2);
    put_entry(&mut b, 12, parent, 12, b"..", 2);
    let mut any = false;
    let it = entries.inspect(|_| any = true);
    fill_entries(&mut b, 24, it);
    if !any {
        put16(&mut b, 16, (bs - 12) as u16);
        b[24..].fill(0);
    }
    Some(b)
}

/// The index shape of an htree directory as found on disk or last written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HtreeLayout {
    pub hash_version: u8,
    /// `(start hash incl. collision bit, logical block)` of each leaf, in hash order.
    pub leaves: Vec<(u32, u32)>,
    /// Logical blocks of the second-level index nodes (empty with one level).
    pub nodes: Vec<u32>,
    /// Blocks in the directory.
    pub nblocks: u32,
}

fn root_limit(bs: usize) -> usize {
    (bs - 32) / 8
}

fn node_limit(bs: usize) -> usize {
    (bs - 8) / 8
}

/// Reads the index of an htree directory from its blocks. `None` when block 0 holds no valid
/// dx_root or the index does not reference every other block exactly once.
pub(crate) fn parse_layout(blocks: &[Vec<u8>]) -> Option<HtreeLayout> {
    let b0 = blocks.first()?;
    let bs = b0.len();
    let n = blocks.len();
    if le16(b0, 4) != 12 || usize::from(le16(b0, 12 + 4)) != bs - 12 || b0[12 + 6] != 2 {
        return None;
    }
    if le32(b0, 24) != 0 || b0[29] != 8 || b0[30] > 1 {
        return None;
    }
    let hash_version = b0[28];
    let levels = b0[30];
    let entries = |b: &[u8], at: usize, limit: usize| -> Option<Vec<(u32, u32)>> {
        let lim = usize::from(le16(b, at));
        let count = usize::from(le16(b, at + 2));
        if lim != limit || count == 0 || count > lim {
            return None;
        }
        let mut v = Vec::with_capacity(count);
        for i in 0..count {
            let hash = if i == 0 { 0 } else { le32(b, at + 8 * i) };
            let blk = le32(b, at + 8 * i + 4);
            if blk == 0 || blk as usize >= n {
                return None;
            }
            v.push((hash, blk));
        }
        Some(v)
    };
    let top = entries(b0, 32, root_limit(bs))?;
    let mut leaves = Vec::new();
    let mut nodes = Vec::new();
    if levels == 0 {
        leaves = top;
    } else {
        for (i, &(h, nb)) in top.iter().enumerate() {
            let nbuf = &blocks[nb as usize];
            if le32(nbuf, 0) != 0 || usize::from(le16(nbuf, 4)) != bs {
                return None;
            }
            let mut sub = entries(nbuf, 8, node_limit(bs))?;
            sub[0].0 = if i == 0 { 0 } else { h };
            nodes.push(nb);
            leaves.extend(sub);
        }
    }
    let mut seen = vec![false; n];
    seen[0] = true;
    for &b in leaves.iter().map(|(_, b)| b).chain(nodes.iter()) {
        if std::mem::replace(&mut seen[b as usize], true) {
            return None;
        }
    }
    if seen.iter().any(|s| !s) || leaves.windows(2).any(|w| w[0].0 & !1 > w[1].0 & !1) {
        return None;
    }
    Some(HtreeLayout {
        hash_version,
        leaves,
        nodes,
        nblocks: n as u32,
    })
}

/// A named entry with its hash, ready for htree placement.
pub(crate) struct Hashed<'a> {
    pub hash: u32,
    pub minor: u32,
    pub name: &'a [u8],
    pub ent: DirEnt,
}

struct Leaf {
    start: u32,
    lblk: Option<u32>,
    range: Range<usize>,
}

/// Splits `entries[range]` into leaves of at most `capacity` bytes, cutting at hash changes
/// when possible (else with the collision bit on the next leaf's start hash).
fn pack(
    entries: &[Hashed],
    range: Range<usize>,
    start: u32,
    lblk: Option<u32>,
    capacity: usize,
    out: &mut Vec<Leaf>,
) {
    let size = |i: usize| rec_size(entries[i].name.len());
    let mut bounds = vec![range.start];
    let mut used = 0;
    for i in range.clone() {
        let sz = size(i);
        let ls = *bounds.last().unwrap_or(&range.start);
        if used + sz > capacity && i > ls {
            let mut cut = i;
            while cut > ls && entries[cut - 1].hash == entries[i].hash {
                cut -= 1;
            }
            if cut == ls {
                cut = i;
            }
            let mut moved: usize = (cut..i).map(size).sum();
            if moved + sz > capacity {
                cut = i;
                moved = 0;
            }
            bounds.push(cut);
            used = moved;
        }
        used += sz;
    }
    for (k, &lo) in bounds.iter().enumerate() {
        let hi = bounds.get(k + 1).copied().unwrap_or(range.end);
        if k == 0 {
            out.push(Leaf {
                start,
                lblk,
                range: lo..hi,
            });
        } else {
            let coll = entries[lo - 1].hash == entries[lo].hash;
            out.push(Leaf {
                start: entries[lo].hash | u32::from(coll),
                lblk: None,
                range: lo..hi,
            });
        }
    }
}

/// Serialises an htree directory. `entries` must be sorted by (hash, minor, name). With a
/// previous layout (of the same hash version) every old leaf keeps its block and hash range
/// and only overflowing leaves split; otherwise leaves are packed full.
pub(crate) fn build_htree(
    dir: u32,
    parent: u32,
    entries: &[Hashed],
    prev: Option<&HtreeLayout>,
    hash_version: u8,
    bs: usize,
) -> Result<(Vec<Vec<u8>>, HtreeLayout)> {
    let size =
        |r: &Range<usize>| -> usize { r.clone().map(|i| rec_size(entries[i].name.len())).sum() };
    let mut leaves = Vec::new();
    let mut next_lblk;
    let mut node_lblks: Vec<u32>;
    match prev {
        Some(p) if !p.leaves.is_empty() => {
            let mut lo = 0;
            for (k, &(start, lblk)) in p.leaves.iter().enumerate() {
                let hi = match p.leaves.get(k + 1) {
                    Some(&(next, _)) => lo + entries[lo..].partition_point(|e| e.hash < next & !1),
                    None => entries.len(),
                };
                let r = lo..hi;
                let total = size(&r);
                let cap = if total <= bs {
                    bs
                } else {
                    let parts = total.div_ceil(bs);
                    (total.div_ceil(parts) + rec_size(NAME_MAX)).min(bs)
                };
                pack(
                    entries,
                    r,
                    if k == 0 { 0 } else { start },
                    Some(lblk),
                    cap,
                    &mut leaves,
                );
                lo = hi;
            }
            next_lblk = p.nblocks;
            node_lblks = p.nodes.clone();
        }
        _ => {
            pack(entries, 0..entries.len(), 0, None, bs, &mut leaves);
            next_lblk = 1;
            node_lblks = Vec::new();
        }
    }
    let nodes_needed = if leaves.len() <= root_limit(bs) {
        0
    } else {
        leaves.len().div_ceil(node_limit(bs))
    };
    if nodes_needed > root_limit(bs) {
        return Err(Error::DirectoryTooLarge(dir));
    }
    if nodes_needed < node_lblks.len() {
        // Fewer index nodes than before would leave blocks unreferenced: repack from scratch.
        return build_htree(dir, parent, entries, None, hash_version, bs);
    }
    for l in leaves.iter_mut() {
        if l.lblk.is_none() {
            l.lblk = Some(next_lblk);
            next_lblk += 1;
        }
    }
    while node_lblks.len() < nodes_needed {
        node_lblks.push(next_lblk);
        next_lblk += 1;
    }
    let nblocks = next_lblk as usize;
    let mut blocks = vec![vec![0u8; bs]; nblocks];
    let lb = |l: &Leaf| l.lblk.unwrap_or(0);
    // Root.
    {
        let b = &mut blocks[0];
        put_entry(b, 0, dir, 12, b".", 2);
        put_entry(b, 12, parent, bs - 12, b"..", 2);
        b[28] = hash_version;
        b[29] = 8;
        b[30] = u8::from(nodes_needed > 0);
        let top: Vec<(u32, u32)> = if nodes_needed == 0 {
            leaves.iter().map(|l| (l.start, lb(l))).collect()
        } else {
            leaves
                .chunks(node_limit(bs))
                .zip(&node_lblks)
                .map(|(c, &nb)| (c[0].start, nb))
                .collect()
        };
        write_dx(b, 32, root_limit(bs), &top);
    }
    if nodes_needed > 0 {
        for (c, &nb) in leaves.chunks(node_limit(bs)).zip(&node_lblks) {
            let b = &mut blocks[nb as usize];
            put_entry(b, 0, 0, bs, b"", 0);
            let v: Vec<(u32, u32)> = c.iter().map(|l| (l.start, lb(l))).collect();
            write_dx(b, 8, node_limit(bs), &v);
        }
    }
    for l in &leaves {
        let b = &mut blocks[lb(l) as usize];
        fill_entries(
            b,
            0,
            entries[l.range.clone()].iter().map(|e| (e.name, e.ent)),
        );
    }
    let layout = HtreeLayout {
        hash_version,
        leaves: leaves.iter().map(|l| (l.start, lb(l))).collect(),
        nodes: node_lblks,
        nblocks: nblocks as u32,
    };
    Ok((blocks, layout))
}

fn write_dx(b: &mut [u8], at: usize, limit: usize, entries: &[(u32, u32)]) {
    put16(b, at, limit as u16);
    put16(b, at + 2, entries.len() as u16);
    for (i, &(h, blk)) in entries.iter().enumerate() {
        if i > 0 {
            put32(b, at + 8 * i, h);
        }
        put32(b, at + 8 * i + 4, blk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(i: u32) -> DirEnt {
        DirEnt {
            ino: 100 + i,
            ftype: 1,
        }
    }

    #[test]
    fn linear_roundtrip() {
        let names: Vec<Vec<u8>> = (0..10).map(|i| format!("file{i}").into_bytes()).collect();
        let b = build_linear(
            12,
            2,
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_slice(), ent(i as u32))),
            4096,
        )
        .unwrap();
        let parsed = parse_block(&b, 12, 1000).unwrap();
        assert_eq!(parsed.len(), 12);
        assert_eq!(parsed[0].0, b".");
        assert_eq!(parsed[1], (b"..".to_vec(), DirEnt { ino: 2, ftype: 2 }));
        assert_eq!(parsed[11].0, b"file9");
        let empty = build_linear(12, 2, std::iter::empty(), 4096).unwrap();
        assert_eq!(parse_block(&empty, 12, 1000).unwrap().len(), 2);
    }

    #[test]
    fn htree_roundtrip_and_stability() {
        let names: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("name-{i:06}").into_bytes())
            .collect();
        let mut hashed: Vec<Hashed> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Hashed {
                hash: (i as u32).wrapping_mul(2_654_435_761) & !1,
                minor: 0,
                name: n,
                ent: ent(i as u32),
            })
            .collect();
        hashed.sort_by(|a, b| (a.hash, a.name).cmp(&(b.hash, b.name)));
        let (blocks, layout) = build_htree(12, 2, &hashed, None, 1, 4096).unwrap();
        let parsed = parse_layout(&blocks).unwrap();
        assert_eq!(parsed, layout);
        let total: usize = blocks[1..]
            .iter()
            .map(|b| parse_block(b, 12, 1 << 20).unwrap().len())
            .sum();
        assert_eq!(total, 3000);
        // Same entries with the old layout: identical blocks.
        let (again, _) = build_htree(12, 2, &hashed, Some(&layout), 1, 4096).unwrap();
        assert_eq!(again, blocks);
        // One more entry changes at most a leaf, a new leaf and the root.
        let extra = b"an-extra-name".to_vec();
        let mut more: Vec<Hashed> = hashed
            .iter()
            .map(|h| Hashed {
                hash: h.hash,
                minor: 0,
                name: h.name,
                ent: h.ent,
            })
            .collect();
        more.push(Hashed {
            hash: 0x8000_0000,
            minor: 0,
            name: &extra,
            ent: ent(9999),
        });
        more.sort_by(|a, b| (a.hash, a.name).cmp(&(b.hash, b.name)));
        let (b2, l2) = build_htree(12, 2, &more, Some(&layout), 1, 4096).unwrap();
        let changed =
            (0..blocks.len()).filter(|&i| b2[i] != blocks[i]).count() + (b2.len() - blocks.len());
        assert!(changed <= 3, "{changed} blocks changed");
        assert_eq!(parse_layout(&b2).unwrap(), l2);
    }

    #[test]
    fn two_levels() {
        let names: Vec<Vec<u8>> = (0..60000)
            .map(|i| format!("a-much-longer-file-name-{i:08}").into_bytes())
            .collect();
        let mut hashed: Vec<Hashed> = names
            .iter()
            .enumerate()
            .map(|(i, n)| Hashed {
                hash: (i as u32).wrapping_mul(2_654_435_761) & !1,
                minor: 0,
                name: n,
                ent: ent(i as u32),
            })
            .collect();
        hashed.sort_by(|a, b| (a.hash, a.name).cmp(&(b.hash, b.name)));
        let (blocks, layout) = build_htree(12, 2, &hashed, None, 1, 4096).unwrap();
        assert!(!layout.nodes.is_empty());
        assert_eq!(parse_layout(&blocks).unwrap(), layout);
    }

    #[test]
    fn hostile_blocks() {
        let mut b = vec![0u8; 4096];
        put16(&mut b, 4, 3);
        assert!(parse_block(&b, 5, 10).is_err());
        put16(&mut b, 4, 4096);
        put32(&mut b, 0, 99);
        b[6] = 1;
        assert!(parse_block(&b, 5, 10).is_err());
        assert!(parse_layout(&[b]).is_none());
    }
}
