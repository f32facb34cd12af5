//! The `obd` toolbox end to end: create → (write through the library) → commit in every
//! wrapping → inspect / zfile / export-raw, and exit codes on bad input.

mod common;

use common::*;
use obd_format::io::WriteAt;
use obd_format::lsmt::RwLayer;

fn write_pattern(data: &std::path::Path, index: &std::path::Path) -> Vec<(u64, Vec<u8>)> {
    let mut l = RwLayer::open(data, index).unwrap();
    let mut v = Vec::new();
    for (i, off) in [0u64, 1 << 20, 5 << 20, (1 << 30) - 8192]
        .iter()
        .enumerate()
    {
        let b: Vec<u8> = (0..8192u32).map(|k| (k as u8) ^ (i as u8 * 37)).collect();
        l.write_at(&b, *off).unwrap();
        v.push((*off, b));
    }
    l.flush().unwrap();
    v
}

#[test]
fn create_commit_inspect_export() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    for sparse in [false, true] {
        let (d, i) = (p(&format!("data{sparse}")), p(&format!("index{sparse}")));
        let mut c = obd();
        c.arg("create")
            .arg("-u")
            .arg("01234567-89ab-cdef-0123-456789abcdef");
        if sparse {
            c.arg("-s");
        }
        run_ok(c.arg(&d).arg(&i).arg("1"));
        // Creating over existing files fails.
        assert!(!obd()
            .arg("create")
            .arg(&d)
            .arg(&i)
            .arg("1")
            .status()
            .unwrap()
            .success());
        let written = write_pattern(&d, &i);
        let o = run_ok(obd().arg("inspect").arg(&d));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v["kind"],
            if sparse {
                "lsmt-rw-data-sparse"
            } else {
                "lsmt-rw-data"
            }
        );

        let mut outs = Vec::new();
        for (k, flags) in [
            vec![],
            vec!["-z"],
            vec!["-z", "-t"],
            vec!["-z", "-t", "--algorithm", "zstd", "--bs", "16"],
        ]
        .into_iter()
        .enumerate()
        {
            let out = p(&format!("commit{sparse}{k}"));
            run_ok(
                obd()
                    .arg("commit")
                    .args(&flags)
                    .args(["-m", "hello", "--uuid"])
                    .arg("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE")
                    .arg(&d)
                    .arg(&i)
                    .arg(&out),
            );
            let o = run_ok(obd().arg("inspect").arg(&out));
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["kind"], "lsmt-ro");
            assert_eq!(v["lsmt_trailer"]["user_tag"], "hello");
            assert_eq!(
                v["lsmt_trailer"]["uuid"],
                "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"
            );
            assert_eq!(
                v["lsmt_trailer"]["parent_uuid"],
                "01234567-89AB-CDEF-0123-456789ABCDEF"
            );
            assert_eq!(v["tar"].is_object(), flags.contains(&"-t"));
            if flags.contains(&"-z") {
                assert_eq!(
                    v["zfile"]["info_from"], "header",
                    "commit -z overwrites the header"
                );
                run_ok(obd().arg("zfile").arg("--verify").arg(&out));
            }
            // Export and compare the written ranges.
            let cfg = p("cfg.json");
            std::fs::write(
                &cfg,
                serde_json::json!({"lowers":[{"file": out}]}).to_string(),
            )
            .unwrap();
            let raw = p("raw");
            run_ok(obd().arg("export-raw").arg(&cfg).arg(&raw));
            let img = std::fs::File::open(&raw).unwrap();
            assert_eq!(img.metadata().unwrap().len(), 1 << 30);
            for (off, b) in &written {
                let mut got = vec![0u8; b.len()];
                std::os::unix::fs::FileExt::read_exact_at(&img, &mut got, *off).unwrap();
                assert_eq!(&got, b);
            }
            outs.push(std::fs::read(&out).unwrap());
        }
        // Committing twice gives the same bytes.
        let again = p(&format!("again{sparse}"));
        run_ok(
            obd()
                .args([
                    "commit",
                    "-z",
                    "-t",
                    "-m",
                    "hello",
                    "--uuid",
                    "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE",
                ])
                .arg(&d)
                .arg(&i)
                .arg(&again),
        );
        assert!(std::fs::read(&again).unwrap() == outs[2]);
    }
}

#[test]
fn zfile_compress_extract_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let src: Vec<u8> = (0..300_001u32)
        .map(|i| ((i / 100) % 256) as u8 ^ (i % 7) as u8)
        .collect();
    std::fs::write(p("src"), &src).unwrap();
    for (k, args) in [
        vec![],
        vec!["-t"],
        vec!["--algorithm", "zstd", "--bs", "64"],
    ]
    .into_iter()
    .enumerate()
    {
        let z = p(&format!("z{k}"));
        run_ok(obd().arg("zfile").args(&args).arg(p("src")).arg(&z));
        run_ok(obd().arg("zfile").arg("--verify").arg(&z));
        let x = p(&format!("x{k}"));
        run_ok(obd().arg("zfile").arg("-x").arg(&z).arg(&x));
        assert!(std::fs::read(&x).unwrap() == src);
    }
}

#[test]
fn exit_codes_tell_failures_apart() {
    let dir = tempfile::tempdir().unwrap();
    let code = |c: &mut std::process::Command| c.output().unwrap().status.code().unwrap();
    assert_eq!(
        code(obd().arg("inspect").arg(dir.path().join("missing"))),
        4
    );
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![7u8; 10000]).unwrap();
    assert_eq!(code(obd().arg("zfile").arg("--verify").arg(&junk)), 1);
    let cfg = dir.path().join("cfg.json");
    std::fs::write(
        &cfg,
        serde_json::json!({"lowers":[{"file": junk}]}).to_string(),
    )
    .unwrap();
    assert_eq!(
        code(obd().arg("export-raw").arg(&cfg).arg(dir.path().join("o"))),
        5
    );
    assert_eq!(code(obd().arg("no-such-command")), 2);
    assert_eq!(
        code(
            obd()
                .args(["zfile", "--bs", "3"])
                .arg(&junk)
                .arg(dir.path().join("z"))
        ),
        2
    );
    assert_eq!(code(&mut convertor()), 2);
}

/// `--version` names the commit; completions and man pages come from the clap
/// definitions of both binaries; `--help` ends with examples.
#[test]
fn version_completions_man_pages_and_examples() {
    for (name, mut cmd) in [("convertor", convertor()), ("obd", obd())] {
        let o = run_ok(cmd.arg("--version"));
        let v = String::from_utf8_lossy(&o.stdout);
        assert!(v.starts_with(&format!("{name} 0.")), "{v}");
        assert!(v.contains('(') && v.contains(')'), "no commit: {v}");
        let mk = || if name == "obd" { obd() } else { convertor() };
        for (shell, needle) in [
            ("bash", "complete -F"),
            ("zsh", "#compdef"),
            ("fish", "complete -c"),
        ] {
            let o = run_ok(mk().args(["completion", shell]));
            let s = String::from_utf8_lossy(&o.stdout);
            assert!(s.contains(needle), "{name} {shell}: {s}");
        }
        let o = run_ok(mk().arg("man"));
        let man = String::from_utf8_lossy(&o.stdout);
        assert!(man.contains(".TH"), "{name}: {man}");
        let o = run_ok(mk().arg("--help"));
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(help.contains("Examples:"), "{name}: {help}");
        // An unknown shell is a usage error.
        let o = mk().args(["completion", "tcsh"]).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{name}");
    }
    assert!(String::from_utf8_lossy(&run_ok(convertor().arg("man")).stdout).contains("turboOCI"));
}
