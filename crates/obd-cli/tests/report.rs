//! The `--report` JSON agrees with what the registry received: manifest digests and sizes,
//! every layer's output digest, size and media type, and the uploaded byte counts.

mod common;

use common::reg::{conv, seed};
use common::tree::corpus;
use obd_registry::testutil::{RegistryKind, TestRegistry};
use serde_json::Value;

#[test]
fn report_matches_the_registry() {
    let Some(layout) = corpus() else { return };
    let Some(reg) = TestRegistry::start_or_skip(RegistryKind::Plain) else {
        return;
    };
    let c = reg.client();
    for tag in ["edge", "multiarch"] {
        let repo = format!("report/{tag}");
        seed(&layout, tag, &c, &repo);
        let dir = tempfile::tempdir().unwrap();
        let rep = dir.path().join("r.json");
        let r = reg.reference(&repo);
        let o = conv(
            &reg,
            &[
                "-r",
                &r,
                "-i",
                tag,
                "-o",
                "obd",
                "--report",
                rep.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&std::fs::read(&rep).unwrap()).unwrap();
        let top = c.get_manifest(&repo, "obd").unwrap();
        assert_eq!(v["output_digest"].as_str().unwrap(), top.digest);
        let mut uploaded = 0;
        let mut skipped = 0;
        for m in v["manifests"].as_array().unwrap() {
            let got = c
                .get_manifest(&repo, m["output_digest"].as_str().unwrap())
                .unwrap();
            assert_eq!(got.bytes.len() as u64, m["output_size"].as_u64().unwrap());
            let mv: Value = serde_json::from_slice(&got.bytes).unwrap();
            assert_eq!(mv["config"]["digest"], m["config_digest"]);
            assert_eq!(mv["config"]["size"], m["config_size"]);
            let layers = mv["layers"].as_array().unwrap();
            let rl = m["layers"].as_array().unwrap();
            assert_eq!(layers.len(), rl.len());
            for (l, r) in layers.iter().zip(rl) {
                assert_eq!(l["digest"], r["output_digest"]);
                assert_eq!(l["size"], r["output_size"]);
                assert_eq!(l["mediaType"], r["output_media_type"]);
                let size = c
                    .head_blob(&repo, l["digest"].as_str().unwrap())
                    .unwrap()
                    .unwrap();
                assert_eq!(size, r["output_size"].as_u64().unwrap());
                // A layer two platforms share may be found already there by the second
                // upload: then it is reported skipped, and not counted as uploaded.
                if r["upload"] == serde_json::json!({"skipped": "already present"}) {
                    skipped += 1;
                } else {
                    assert_eq!(r["upload"]["bytes"].as_u64().unwrap(), size, "{r}");
                    assert!(r["upload"]["seconds"].as_f64().unwrap() >= 0.0);
                    uploaded += size;
                }
                for stage in ["download", "apply", "commit"] {
                    assert!(r[stage]["seconds"].as_f64().unwrap() >= 0.0, "{stage}");
                }
                assert_eq!(r["bytes_read"], r["source_size"]);
            }
        }
        assert_eq!(v["totals"]["bytes_uploaded"].as_u64().unwrap(), uploaded);
        assert_eq!(v["totals"]["uploads_skipped"].as_u64().unwrap(), skipped);
    }
}
