#!/usr/bin/env bash
# The main job on the embedded default, no registry or server needed: convert the
# multi-arch hello-world image shipped in testdata/ (an OCI image layout) into overlaybd
# images, then check the result: flatten the amd64 image's layers into a raw ext4 disk with
# `obd export-raw`, run e2fsck on it, and run the /hello program found inside.
set -euo pipefail
cd "$(dirname "$0")"
PATH=$PATH:/usr/sbin:/sbin
cargo build --release --bins -q
BIN=target/release
W=work/demo; rm -rf "$W"; mkdir -p "$W"
cp -r testdata/upstream/hello-world-layout "$W/layout"; chmod -R u+w "$W/layout"

$BIN/convertor -r "oci:$W/layout" -i multi-arch -o multi-arch-obd --oci -d "$W/tmp" --report "$W/report.json"
python3 - "$W/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"converted {r['source']} -> {r['target']} = {r['output_digest']} in {r['seconds']:.2f}s")
for m in r["manifests"]:
    l = m["layers"][0]
    print(f"  {m['platform']:<16} layer {l['source_size']:>6} B gzip -> {l['output_size']:>7} B overlaybd  manifest {m['output_digest'][:19]}")
PY

# Pick the converted amd64 manifest and flatten its layers.
python3 - "$W" <<'PY' > "$W/config.json"
import json, sys, os
w = sys.argv[1]; L = w + "/layout"
blob = lambda d: os.path.abspath(f"{L}/blobs/sha256/{d.split(':')[1]}")
idx = json.load(open(L + "/index.json"))
top = [m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "multi-arch-obd"][0]
entries = json.load(open(blob(top["digest"])))["manifests"]
amd = [e for e in entries if e.get("platform", {}).get("architecture") == "amd64"][0]
man = json.load(open(blob(amd["digest"])))
print(json.dumps({"lowers": [{"file": blob(l["digest"])} for l in man["layers"]]}))
PY
$BIN/obd export-raw "$W/config.json" "$W/disk.raw"
e2fsck -fn "$W/disk.raw"
debugfs -R "dump /hello $W/hello" "$W/disk.raw" 2>/dev/null
chmod +x "$W/hello" && "$W/hello" | head -3
