#!/usr/bin/env bash
# The main job on the embedded default: no registry or server needed.
#
# Today (the convertor pipeline is still being built) it reads the image that the upstream
# C++ tools converted (testdata/upstream/converted-hello-world-layout), flattens its
# overlaybd layer into a raw ext4 disk with `obd export-raw`, checks it with e2fsck, and runs
# the /hello program found inside.
set -euo pipefail
cd "$(dirname "$0")"
cargo build --release --bins -q
OBD=target/release/obd
W=work/demo; rm -rf "$W"; mkdir -p "$W"
L=testdata/upstream/converted-hello-world-layout
M=$(python3 -c 'import json,sys; i=json.load(open(sys.argv[1]+"/index.json")); print([m["digest"] for m in i["manifests"] if m.get("annotations",{}).get("org.opencontainers.image.ref.name")=="amd64-converted"][0])' "$L")
LAYER=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["layers"][0]["digest"])' "$L/blobs/sha256/${M#sha256:}")
echo "layer $LAYER:"
$OBD inspect "$L/blobs/sha256/${LAYER#sha256:}" | head -20
printf '{"lowers":[{"file":"%s"}]}\n' "$PWD/$L/blobs/sha256/${LAYER#sha256:}" > "$W/config.json"
$OBD export-raw "$W/config.json" "$W/disk.raw"
PATH=$PATH:/usr/sbin:/sbin
e2fsck -fn "$W/disk.raw"
debugfs -R "dump /hello $W/hello" "$W/disk.raw" 2>/dev/null
chmod +x "$W/hello" && "$W/hello" | head -3
