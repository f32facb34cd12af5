//! Raw tar bytes for tests: header blocks written field by field, so a test can build
//! what no well-behaved tar writer emits (several extended headers before one member, a
//! global header, a truncated member, a bad checksum, a NUL in a PAX record).
//!
//! ```
//! use obd_tar::testutil::RawTar;
//! let tar = RawTar::new().pax(&[("path", b"renamed")]).file("f", b"data").end();
//! let e = obd_tar::TarReader::new(&tar[..]).next_entry().unwrap().unwrap();
//! assert_eq!(e.name, b"renamed");
//! ```

/// A tar being written block by block.
#[derive(Clone, Debug, Default)]
pub struct RawTar(Vec<u8>);

/// mtime of every header [`RawTar`] writes (2023-11-14T22:13:20Z).
pub const MTIME: u64 = 1_700_000_000;

/// One ustar header block: `name`, type flag, size, mode and link target; checksum set.
pub fn header(name: &[u8], typ: u8, size: u64, mode: u32, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    if size < 8u64.pow(11) {
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        // Base-256, as GNU tar writes sizes of 8 GiB and more.
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    h[136..148].copy_from_slice(format!("{MTIME:011o}\0").as_bytes());
    h[156] = typ;
    h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
    h[257..265].copy_from_slice(b"ustar\x0000");
    set_checksum(&mut h);
    h
}

/// Writes the header checksum of `h`.
pub fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// One PAX record, `"<len> key=value\n"`.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body_len = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut n = body_len + 1;
    while n.to_string().len() + body_len != n {
        n += 1;
    }
    let mut r = format!("{n} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl RawTar {
    pub fn new() -> Self {
        RawTar(Vec::new())
    }

    /// A header block as it is.
    pub fn block(mut self, h: [u8; 512]) -> Self {
        self.0.extend_from_slice(&h);
        self
    }

    /// Raw bytes (data, padding, garbage).
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }

    /// A header of type `typ` followed by `data`, padded to a block.
    pub fn member(self, name: &str, typ: u8, mode: u32, link: &str, data: &[u8]) -> Self {
        let h = header(
            name.as_bytes(),
            typ,
            data.len() as u64,
            mode,
            link.as_bytes(),
        );
        self.block(h).bytes(data).pad()
    }

    /// A regular file, mode 0644.
    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.member(name, b'0', 0o644, "", data)
    }

    /// A symlink with the given header mode.
    pub fn symlink(self, name: &str, target: &str, mode: u32) -> Self {
        self.member(name, b'2', mode, target, b"")
    }

    /// A PAX extended header (`x`) with these records.
    pub fn pax(self, records: &[(&str, &[u8])]) -> Self {
        self.pax_typed(b'x', records)
    }

    /// A PAX global header (`g`) with these records.
    pub fn global(self, records: &[(&str, &[u8])]) -> Self {
        self.pax_typed(b'g', records)
    }

    fn pax_typed(self, typ: u8, records: &[(&str, &[u8])]) -> Self {
        let d: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.member("PaxHeaders/x", typ, 0o644, "", &d)
    }

    /// A GNU long name (`L`) or long link (`K`) header.
    pub fn gnu_long(self, typ: u8, value: &str) -> Self {
        let mut d = value.as_bytes().to_vec();
        d.push(0);
        self.member("././@LongLink", typ, 0o644, "", &d)
    }

    /// Zeros up to the next 512-byte boundary.
    pub fn pad(mut self) -> Self {
        let n = self.0.len().next_multiple_of(512);
        self.0.resize(n, 0);
        self
    }

    /// The end-of-archive blocks, and the bytes.
    pub fn end(self) -> Vec<u8> {
        self.bytes(&[0u8; 1024]).0
    }

    /// The bytes as they are (no end-of-archive blocks).
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Archives malformed in one way each, as `(what, bytes, words the error names)`: a
/// truncated member, a header cut short, a bad checksum, a size that is not a number, a NUL
/// in a PAX path, a PAX header over the 1 MiB limit, a PAX record with a bad length. Every
/// one must be refused as bad input, by the reader and by the tools above it.
pub fn malformed_archives() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut bad_sum = header(b"f", b'0', 0, 0o644, b"");
    bad_sum[0] = b'g';
    let mut not_a_number = header(b"f", b'0', 0, 0o644, b"");
    not_a_number[124..136].copy_from_slice(b"zzzzzzzzzzz\0");
    set_checksum(&mut not_a_number);
    vec![
        (
            "truncated member",
            RawTar::new()
                .block(header(b"big", b'0', 10_000, 0o644, b""))
                .bytes(&[b'x'; 600])
                .into_bytes(),
            "truncated",
        ),
        (
            "truncated header",
            RawTar::new()
                .file("a", b"1")
                .bytes(&[1u8; 100])
                .into_bytes(),
            "truncated",
        ),
        (
            "bad checksum",
            RawTar::new().block(bad_sum).end(),
            "checksum mismatch",
        ),
        (
            "size not a number",
            RawTar::new().block(not_a_number).end(),
            "not a number",
        ),
        (
            "NUL in a PAX path",
            RawTar::new().pax(&[("path", b"a\0b")]).file("f", b"").end(),
            "NUL",
        ),
        (
            "PAX header over the limit",
            RawTar::new()
                .pax(&[("comment", &vec![b'y'; 1 << 20])])
                .file("f", b"")
                .end(),
            "larger than the limit",
        ),
        (
            "PAX record with a bad length",
            RawTar::new()
                .member("x", b'x', 0o644, "", b"99 path=a\n")
                .file("f", b"")
                .end(),
            "inconsistent",
        ),
    ]
}
