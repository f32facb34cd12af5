//! Writes the seed corpora of every fuzz target into `OUT_DIR/<target>/` (run.sh runs it
//! before fuzzing). Every seed is small and made here from the crates' own writers, so no
//! binary seed needs to be committed.

use std::fs::File;
use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

use obd_format::gzindex::{DictCompression, GzIndexOptions, GzIndexReader};
use obd_format::io::ReadAt;
use obd_format::lsmt::{commit, CommitOptions, Segment};
use obd_format::output::{write_wrapped, Wrapping};
use obd_format::zfile::{Algorithm, ZFileOptions, ZFileWriter};
use obdconv_fuzz::{encode_image, gzip_fixture, populated_fs};

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: seedgen OUT_DIR"));
    let tars = tars();
    for (i, t) in tars.iter().enumerate() {
        put(&out, "tar_read", &format!("tar-{i}"), t);
        put(&out, "tar_apply", &format!("tar-{i}"), t);
    }
    for (name, b) in layers(&out) {
        put(&out, "lsmt_open", &name, &b);
    }
    for (name, b) in zfiles() {
        put(&out, "zfile_read", &name, &b);
    }
    for (name, b) in gzip_metas() {
        put(&out, "gzindex_parse", &name, &b);
    }
    put(
        &out,
        "ext4_open",
        "populated",
        &encode_image(&populated_fs()),
    );
    for (name, b) in jsons() {
        put(&out, "image_json", &name, &b);
    }
    for (i, h) in [
        "Bearer realm=\"https://auth.example/token\",service=\"registry\",scope=\"repository:a/b:pull\"",
        "Basic realm=\"Registry Realm\"",
        "Negotiate abc==, Bearer realm=x, error=\"invalid_token\"",
        "bearer realm=\"a\\\"b\" , Basic\nlocalhost:5000/ns/app:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ]
    .iter()
    .enumerate()
    {
        put(&out, "www_authenticate", &format!("h-{i}"), h.as_bytes());
    }
}

fn put(out: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// Layer tars: plain members, GNU long names and sparse files, PAX records and xattrs,
/// whiteouts and opaque directories, hard links, devices.
fn tars() -> Vec<Vec<u8>> {
    let mut v = Vec::new();

    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    b.append_data(&mut dir.clone(), "etc/", &[][..]).unwrap();
    let mut f = tar::Header::new_ustar();
    f.set_mode(0o644);
    f.set_mtime(1_700_000_000);
    let body = b"hello world\n";
    f.set_size(body.len() as u64);
    b.append_data(&mut f.clone(), "etc/motd", &body[..])
        .unwrap();
    let mut l = tar::Header::new_ustar();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    b.append_link(&mut l, "etc/link", "motd").unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "etc/hard", "etc/motd").unwrap();
    let mut c = tar::Header::new_ustar();
    c.set_entry_type(tar::EntryType::Char);
    c.set_device_major(1).unwrap();
    c.set_device_minor(3).unwrap();
    c.set_size(0);
    b.append_data(&mut c, "dev/null", &[][..]).unwrap();
    v.push(b.into_inner().unwrap());

    // Whiteouts and an opaque directory.
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut dir.clone(), "etc/", &[][..]).unwrap();
    let mut e = tar::Header::new_ustar();
    e.set_size(0);
    e.set_mode(0o644);
    b.append_data(&mut e.clone(), "etc/.wh.motd", &[][..])
        .unwrap();
    b.append_data(&mut e.clone(), "etc/.wh..wh..opq", &[][..])
        .unwrap();
    b.append_data(&mut f.clone(), "etc/new", &body[..]).unwrap();
    v.push(b.into_inner().unwrap());

    // GNU long names and a PAX header with xattrs and fractional times.
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("usr/{}/file", "d".repeat(150));
    let mut g = tar::Header::new_gnu();
    g.set_mode(0o600);
    g.set_size(body.len() as u64);
    b.append_data(&mut g, &long, &body[..]).unwrap();
    b.append_pax_extensions([
        ("SCHILY.xattr.user.k", &b"value"[..]),
        ("mtime", &b"1700000000.123456789"[..]),
        ("uid", &b"100000"[..]),
        ("path", &b"usr/pax-name"[..]),
    ])
    .unwrap();
    b.append_data(&mut f.clone(), "usr/ignored", &body[..])
        .unwrap();
    v.push(b.into_inner().unwrap());

    // A GNU sparse member (type 'S'): two data segments of 512 bytes in an 8 KiB file.
    let mut raw = vec![0u8; 512];
    raw[..11].copy_from_slice(b"sparse-file");
    put_octal(&mut raw[100..108], 0o644);
    put_octal(&mut raw[108..116], 0);
    put_octal(&mut raw[116..124], 0);
    put_octal(&mut raw[124..136], 1024);
    put_octal(&mut raw[136..148], 1_700_000_000);
    raw[156] = b'S';
    raw[257..263].copy_from_slice(b"ustar ");
    raw[263..265].copy_from_slice(b" \0");
    for (i, (off, len)) in [(0u64, 512u64), (7680, 512)].iter().enumerate() {
        let at = 386 + i * 24;
        put_octal(&mut raw[at..at + 12], *off);
        put_octal(&mut raw[at + 12..at + 24], *len);
    }
    put_octal(&mut raw[483..495], 8192);
    raw[148..156].fill(b' ');
    let sum: u32 = raw.iter().map(|&x| u32::from(x)).sum();
    raw[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    raw.extend_from_slice(&[b'a'; 512]);
    raw.extend_from_slice(&[b'z'; 512]);
    raw.extend_from_slice(&[0u8; 1024]);
    v.push(raw);
    v
}

fn put_octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}\0", w = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

/// A small committed layer (data, a zeroed range, two index entries), raw and wrapped.
fn layers(out: &Path) -> Vec<(String, Vec<u8>)> {
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8).collect();
    let segs = [
        Segment::new(8, 8, 0),
        Segment {
            zeroed: true,
            ..Segment::new(64, 16, 0)
        },
        Segment::new(100, 8, 8),
    ];
    let opts = CommitOptions {
        virtual_size: 1 << 20,
        ..Default::default()
    };
    let write = |wrap: Wrapping| -> Vec<u8> {
        let p = out.join(format!(".layer-{}", std::process::id()));
        write_wrapped(File::create(&p).unwrap(), wrap, |w| {
            commit(&segs, &[&data as &dyn ReadAt], &opts, w)
        })
        .unwrap();
        let b = std::fs::read(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        b
    };
    let zopts = ZFileOptions::default();
    vec![
        ("raw".into(), write(Wrapping::default())),
        (
            "zfile-tar".into(),
            write(Wrapping {
                zfile: Some(zopts),
                tar: true,
                overwrite_header: true,
            }),
        ),
    ]
}

/// Small ZFiles: LZ4 and zstd, with and without per-block CRCs.
fn zfiles() -> Vec<(String, Vec<u8>)> {
    let payload: Vec<u8> = (0..20_000u32)
        .map(|i| if i % 3 == 0 { (i % 251) as u8 } else { b'x' })
        .collect();
    let mut v = Vec::new();
    for (algo, verify) in [
        (Algorithm::Lz4, true),
        (Algorithm::Zstd, true),
        (Algorithm::Lz4, false),
    ] {
        let opts = ZFileOptions {
            algorithm: algo,
            verify,
            ..Default::default()
        };
        let mut z = ZFileWriter::new(Cursor::new(Vec::new()), opts).unwrap();
        z.write_all(&payload).unwrap();
        let (c, _) = z.finish_overwrite_header().unwrap();
        v.push((format!("{}-{verify}", algo.name()), c.into_inner()));
    }
    v
}

/// The `gzip.meta` of the fixed gzip blob, windows zlib-compressed and stored.
fn gzip_metas() -> Vec<(String, Vec<u8>)> {
    let (gz, _) = gzip_fixture();
    [
        ("zlib", DictCompression::Zlib(6)),
        ("stored", DictCompression::None),
    ]
    .into_iter()
    .map(|(name, dict)| {
        let mut r = GzIndexReader::with_options(
            &gz[..],
            GzIndexOptions {
                span: 64 << 10,
                dict,
            },
        )
        .unwrap();
        let mut sink = Vec::new();
        r.read_to_end(&mut sink).unwrap();
        (name.to_string(), r.finish().unwrap().meta)
    })
    .collect()
}

/// The small JSON blobs (manifests, indexes, configs) of the upstream test layouts, each
/// behind a media type selector byte.
fn jsons() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/upstream");
    let mut v = Vec::new();
    let mut stack = vec![root];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = rd.map(|e| e.unwrap().path()).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let Ok(b) = std::fs::read(&p) else { continue };
            if b.len() > 8192 || serde_json::from_slice::<serde_json::Value>(&b).is_err() {
                continue;
            }
            let name = p.file_name().unwrap().to_string_lossy();
            let name: String = name.chars().take(16).collect();
            if v.iter().any(|(n, _)| *n == name) || v.len() >= 24 {
                continue;
            }
            let mut seed = vec![v.len() as u8];
            seed.extend_from_slice(&b);
            v.push((name, seed));
        }
    }
    v
}
