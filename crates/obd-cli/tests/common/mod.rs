//! Helpers shared by the end-to-end tests: the binaries, test data, external oracles.

#![allow(dead_code)]

pub mod inject;
pub mod reg;
pub mod rel;
pub mod svc;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn obd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_obd"))
}

/// The `convertor` binary, without a dedup database unless the test asks for one.
pub fn convertor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_convertor"));
    c.env("OBDCONV_DB_TYPE", "none");
    c
}

/// `convertor -r oci:SRC --target-repository oci:OUT -d WORK`: one OCI layout converted into
/// another; the caller adds the tags and flags.
pub fn layout_convertor(src: &Path, out: &Path, work: &Path) -> Command {
    let mut c = convertor();
    c.arg("-r")
        .arg(format!("oci:{}", src.display()))
        .arg("--target-repository")
        .arg(format!("oci:{}", out.display()))
        .arg("-d")
        .arg(work);
    c
}

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// A writable copy of the upstream hello-world OCI layout at `dir/hello`.
pub fn hello_layout(dir: &Path) -> PathBuf {
    let dst = dir.join("hello");
    run_ok(
        Command::new("cp")
            .arg("-r")
            .arg(testdata().join("upstream/hello-world-layout"))
            .arg(&dst),
    );
    run_ok(Command::new("chmod").arg("-R").arg("u+w").arg(&dst));
    dst
}

/// Runs a command, asserting success; returns stdout.
pub fn run_ok(cmd: &mut Command) -> Output {
    let o = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// True if `tool` can be run. When it cannot: panics under CI (where `.ci/run` installs
/// it), otherwise prints a skip note and returns false.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "command -v {tool} || test -x /usr/sbin/{tool} || test -x /sbin/{tool}"
        ))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("{tool} is required under CI");
        }
        eprintln!("skipping: {tool} not installed");
    }
    found
}

/// Resolves e2fsprogs tools that live in /sbin on Debian.
pub fn tool(name: &str) -> Command {
    for d in ["/usr/sbin", "/sbin"] {
        let p = Path::new(d).join(name);
        if p.exists() {
            return Command::new(p);
        }
    }
    Command::new(name)
}

/// `e2fsck -fn IMG` must exit 0.
pub fn e2fsck_clean(img: &Path) {
    let o = tool("e2fsck").arg("-fn").arg(img).output().expect("e2fsck");
    assert!(
        o.status.success(),
        "e2fsck -fn {} exited {}:\n{}{}",
        img.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// The manifest JSON of `tag` in an OCI layout (following `index.json`).
pub fn layout_manifest(layout: &Path, tag: &str) -> serde_json::Value {
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let d = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("tag {tag} not in {}", layout.display()))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    serde_json::from_slice(&std::fs::read(blob(layout, &d)).unwrap()).unwrap()
}

pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}
