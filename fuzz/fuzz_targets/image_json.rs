//! The manifest / index / config JSON handling of `obd_convert::image` and `store::Desc`
//! on arbitrary bytes: the first byte picks a media type, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use obd_convert::image::{convert_config, is_attestation, kind_of, platform_string};
use obd_convert::store::Desc;
use serde_json::Value;

const TYPES: &[&str] = &[
    "",
    "application/json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "text/plain",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let _ = convert_config(body, &["sha256:00".to_string()]);
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let _ = kind_of(TYPES[usize::from(sel) % TYPES.len()], Some(&v));
    let _ = Desc::from_json(&v).to_json();
    let _ = Desc::from_json(&v["config"]);
    for l in v["layers"].as_array().into_iter().flatten().take(64) {
        let _ = Desc::from_json(l);
    }
    for m in v["manifests"].as_array().into_iter().flatten().take(64) {
        let _ = (Desc::from_json(m), platform_string(m), is_attestation(m));
    }
    let _ = (platform_string(&v), is_attestation(&v));
});
