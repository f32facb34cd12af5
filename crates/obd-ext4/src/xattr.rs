//! Extended attributes: name-prefix indexes, the in-inode area after `i_extra_isize`, the
//! external xattr block with its header and hashes, and the POSIX ACL conversion between the
//! xattr-API format and ext4's compact on-disk format.

use std::collections::BTreeMap;

use crate::bytes::{le16, le32, put16, put32};
use crate::error::{Error, Result};

pub(crate) const XATTR_MAGIC: u32 = 0xEA02_0000;
const BLOCK_HEADER: usize = 32;
const ENTRY_HEADER: usize = 16;

const PREFIXES: &[(&str, u8, bool)] = &[
    ("system.posix_acl_access", 2, true),
    ("system.posix_acl_default", 3, true),
    ("system.richacl", 8, true),
    ("user.", 1, false),
    ("trusted.", 4, false),
    ("security.", 6, false),
    ("system.", 7, false),
];

/// Key of one attribute: (name index, name suffix).
pub(crate) type XattrKey = (u8, Vec<u8>);

/// Splits a full attribute name into its on-disk index and suffix.
pub(crate) fn split_name(name: &str) -> Result<XattrKey> {
    for &(p, idx, exact) in PREFIXES {
        if exact {
            if name == p {
                return Ok((idx, Vec::new()));
            }
        } else if let Some(rest) = name.strip_prefix(p) {
            if rest.is_empty() || rest.len() > 255 {
                break;
            }
            return Ok((idx, rest.as_bytes().to_vec()));
        }
    }
    Err(Error::InvalidXattrName(name.to_string()))
}

/// The full name of an attribute key.
pub(crate) fn full_name(key: &XattrKey) -> String {
    let prefix = PREFIXES
        .iter()
        .find(|p| p.1 == key.0)
        .map(|p| p.0)
        .unwrap_or("unknown.");
    format!("{prefix}{}", String::from_utf8_lossy(&key.1))
}

fn entry_len(name_len: usize) -> usize {
    (ENTRY_HEADER + name_len + 3) & !3
}

fn value_len(n: usize) -> usize {
    (n + 3) & !3
}

/// The entry hash: name bytes (as signed chars) then the padded value words.
fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << 5) ^ (h >> 27) ^ (i32::from(c as i8) as u32);
    }
    let mut padded = value.to_vec();
    padded.resize(value_len(value.len()), 0);
    for w in padded.chunks(4) {
        h = (h << 16) ^ (h >> 16) ^ le32(w, 0);
    }
    h
}

/// Attributes in the order the kernel keeps them in a block: index, name length, name.
fn sorted(attrs: &BTreeMap<XattrKey, Vec<u8>>) -> Vec<(&XattrKey, &Vec<u8>)> {
    let mut v: Vec<_> = attrs.iter().collect();
    v.sort_by(|a, b| (a.0 .0, a.0 .1.len(), &a.0 .1).cmp(&(b.0 .0, b.0 .1.len(), &b.0 .1)));
    v
}

/// Where the attributes of one inode go.
pub(crate) struct Placement {
    /// Bytes for the in-inode area (from `area_start` to the end of the inode), if any.
    pub in_inode: Option<Vec<u8>>,
    /// Content of the xattr block, if one is needed.
    pub block: Option<Vec<u8>>,
}

/// Lays out attributes: greedily in the inode, the rest in one block.
pub(crate) fn place(
    ino: u32,
    attrs: &BTreeMap<XattrKey, Vec<u8>>,
    area_len: usize,
    bs: usize,
) -> Result<Placement> {
    let mut inode_items = Vec::new();
    let mut block_items = Vec::new();
    let mut inode_used = 8; // magic + terminator
    let mut block_used = BLOCK_HEADER + 4;
    for (k, v) in sorted(attrs) {
        let need = entry_len(k.1.len()) + value_len(v.len());
        if area_len >= 8 && inode_used + need <= area_len {
            inode_used += need;
            inode_items.push((k, v));
        } else {
            block_used += need;
            block_items.push((k, v));
        }
    }
    if block_used > bs {
        return Err(Error::XattrTooLarge {
            ino,
            bytes: block_used,
        });
    }
    let in_inode = (!inode_items.is_empty()).then(|| {
        let mut b = vec![0u8; area_len];
        put32(&mut b, 0, XATTR_MAGIC);
        write_entries(&mut b, 4, 4, &inode_items);
        b
    });
    let block = (!block_items.is_empty()).then(|| {
        let mut b = vec![0u8; bs];
        put32(&mut b, 0, XATTR_MAGIC);
        put32(&mut b, 4, 1); // refcount
        put32(&mut b, 8, 1); // blocks
        let hashes = write_entries(&mut b, BLOCK_HEADER, 0, &block_items);
        let mut h = 0u32;
        for eh in hashes {
            h = (h << 16) ^ (h >> 16) ^ eh;
        }
        put32(&mut b, 12, h);
        b
    });
    Ok(Placement { in_inode, block })
}

/// Writes entries at `first` and values from the end of `b`; value offsets are relative to
/// `base`. Returns the entry hashes.
fn write_entries(
    b: &mut [u8],
    first: usize,
    base: usize,
    items: &[(&XattrKey, &Vec<u8>)],
) -> Vec<u32> {
    let mut off = first;
    let mut vend = b.len();
    let mut hashes = Vec::new();
    for (k, v) in items {
        let vl = value_len(v.len());
        let voff = if v.is_empty() { 0 } else { vend - vl };
        if !v.is_empty() {
            b[voff..voff + v.len()].copy_from_slice(v);
            vend = voff;
        }
        let h = entry_hash(&k.1, v);
        b[off] = k.1.len() as u8;
        b[off + 1] = k.0;
        put16(
            b,
            off + 2,
            if v.is_empty() {
                0
            } else {
                (voff - base) as u16
            },
        );
        put32(b, off + 4, 0);
        put32(b, off + 8, v.len() as u32);
        put32(b, off + 12, h);
        b[off + 16..off + 16 + k.1.len()].copy_from_slice(&k.1);
        off += entry_len(k.1.len());
        hashes.push(h);
    }
    hashes
}

/// Parses entries starting at `first` in `b`, with value offsets relative to `base`.
fn parse_entries(
    ino: u32,
    b: &[u8],
    first: usize,
    base: usize,
    out: &mut BTreeMap<XattrKey, Vec<u8>>,
) -> Result<()> {
    let bad = |why: &str| Error::BadXattr {
        ino,
        reason: why.to_string(),
    };
    let mut off = first;
    loop {
        if off + 4 > b.len() {
            return Err(bad("entries run past the end"));
        }
        if le32(b, off) == 0 {
            return Ok(());
        }
        if off + ENTRY_HEADER > b.len() {
            return Err(bad("truncated entry"));
        }
        let name_len = usize::from(b[off]);
        let index = b[off + 1];
        let voff = usize::from(le16(b, off + 2));
        let inum = le32(b, off + 4);
        let vsize = le32(b, off + 8) as usize;
        if inum != 0 {
            return Err(Error::UnsupportedFeature(
                "xattr values in inodes (ea_inode)".into(),
            ));
        }
        let nend = off + ENTRY_HEADER + name_len;
        if nend > b.len() {
            return Err(bad("name past the end"));
        }
        let name = b[off + ENTRY_HEADER..nend].to_vec();
        let vstart = base.checked_add(voff).ok_or_else(|| bad("value offset"))?;
        let value = match vstart.checked_add(vsize) {
            Some(vend) if vend <= b.len() => b[vstart..vend].to_vec(),
            _ => return Err(bad("value outside its area")),
        };
        out.insert((index, name), value);
        off += entry_len(name_len);
    }
}

/// Reads the in-inode attributes from the area bytes (starting at the magic).
pub(crate) fn parse_in_inode(
    ino: u32,
    area: &[u8],
    out: &mut BTreeMap<XattrKey, Vec<u8>>,
) -> Result<()> {
    if area.len() < 8 || le32(area, 0) != XATTR_MAGIC {
        return Ok(());
    }
    parse_entries(ino, area, 4, 4, out)
}

/// Reads an xattr block; returns its reference count.
pub(crate) fn parse_block(
    ino: u32,
    b: &[u8],
    out: &mut BTreeMap<XattrKey, Vec<u8>>,
) -> Result<u32> {
    if le32(b, 0) != XATTR_MAGIC || le32(b, 8) != 1 {
        return Err(Error::BadXattr {
            ino,
            reason: "bad xattr block header".into(),
        });
    }
    parse_entries(ino, b, BLOCK_HEADER, 0, out)?;
    Ok(le32(b, 4))
}

const ACL_USER_OBJ: u16 = 1;
const ACL_USER: u16 = 2;
const ACL_GROUP_OBJ: u16 = 4;
const ACL_GROUP: u16 = 8;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;

/// xattr-API POSIX ACL (version 2, 8-byte entries) to ext4's on-disk ACL (version 1, short
/// entries for the owner/group/mask/other tags). Values that do not parse are kept as given.
pub(crate) fn acl_to_disk(v: &[u8]) -> Vec<u8> {
    if v.len() < 4 || le32(v, 0) != 2 || (v.len() - 4) % 8 != 0 {
        return v.to_vec();
    }
    let mut out = vec![0u8; 4];
    put32(&mut out, 0, 1);
    for e in v[4..].chunks(8) {
        let tag = le16(e, 0);
        out.extend_from_slice(&e[0..4]);
        match tag {
            ACL_USER | ACL_GROUP => out.extend_from_slice(&e[4..8]),
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {}
            _ => return v.to_vec(),
        }
    }
    out
}

/// The inverse of [`acl_to_disk`].
pub(crate) fn acl_from_disk(v: &[u8]) -> Vec<u8> {
    if v.len() < 4 || le32(v, 0) != 1 {
        return v.to_vec();
    }
    let mut out = vec![0u8; 4];
    put32(&mut out, 0, 2);
    let mut off = 4;
    while off + 4 <= v.len() {
        let tag = le16(v, off);
        out.extend_from_slice(&v[off..off + 4]);
        match tag {
            ACL_USER | ACL_GROUP if off + 8 <= v.len() => {
                out.extend_from_slice(&v[off + 4..off + 8]);
                off += 8;
            }
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {
                out.extend_from_slice(&u32::MAX.to_le_bytes());
                off += 4;
            }
            _ => return v.to_vec(),
        }
    }
    out
}

pub(crate) fn is_acl(index: u8) -> bool {
    index == 2 || index == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(split_name("user.foo").unwrap(), (1, b"foo".to_vec()));
        assert_eq!(
            split_name("security.capability").unwrap(),
            (6, b"capability".to_vec())
        );
        assert_eq!(split_name("system.posix_acl_access").unwrap(), (2, vec![]));
        assert_eq!(
            split_name("trusted.overlay.opaque").unwrap(),
            (4, b"overlay.opaque".to_vec())
        );
        assert!(split_name("gnu.x").is_err());
        assert!(split_name("user.").is_err());
        assert_eq!(
            full_name(&(6, b"capability".to_vec())),
            "security.capability"
        );
    }

    #[test]
    fn placement_roundtrip() {
        let mut a = BTreeMap::new();
        a.insert((1u8, b"small".to_vec()), b"v".to_vec());
        a.insert((1u8, b"big".to_vec()), vec![7u8; 1000]);
        a.insert(
            (6u8, b"capability".to_vec()),
            vec![
                1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        );
        let p = place(12, &a, 96, 4096).unwrap();
        let mut back = BTreeMap::new();
        parse_in_inode(12, p.in_inode.as_ref().unwrap(), &mut back).unwrap();
        assert_eq!(
            parse_block(12, p.block.as_ref().unwrap(), &mut back).unwrap(),
            1
        );
        assert_eq!(back, a);
        let mut huge = BTreeMap::new();
        huge.insert((1u8, b"x".to_vec()), vec![0u8; 5000]);
        assert!(matches!(
            place(1, &huge, 96, 4096),
            Err(Error::XattrTooLarge { .. })
        ));
    }

    #[test]
    fn acl_conversion() {
        let mut api = vec![2, 0, 0, 0];
        for (tag, perm, id) in [
            (1u16, 7u16, u32::MAX),
            (2, 5, 1000),
            (4, 5, u32::MAX),
            (0x10, 7, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            api.extend_from_slice(&tag.to_le_bytes());
            api.extend_from_slice(&perm.to_le_bytes());
            api.extend_from_slice(&id.to_le_bytes());
        }
        let disk = acl_to_disk(&api);
        assert_eq!(disk.len(), 4 + 4 * 4 + 8);
        assert_eq!(acl_from_disk(&disk), api);
    }

    #[test]
    fn hostile() {
        let mut b = vec![0u8; 4096];
        put32(&mut b, 0, XATTR_MAGIC);
        put32(&mut b, 8, 1);
        b[32] = 200; // name past a tiny area? no: value offset bad
        put16(&mut b, 34, 4000);
        put32(&mut b, 40, 1000);
        let mut out = BTreeMap::new();
        assert!(parse_block(1, &b, &mut out).is_err());
    }
}
