#!/bin/bash
# The benchmark suite in one command: builds (or reuses) the test corpus, builds the release
# binaries, and prints one table row per image (apply+commit in process; convertor end to
# end OCI layout -> layout and local registry -> registry, each beside the lower-bound pass
# of gunzip/unzstd + sha256 over the same layers). Extra arguments choose the images.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(testdata/corpus.sh)"
cargo build --release --locked --bins -p obd-cli -p obd-bench >&2
exec target/release/obd-bench suite "$OBD_CORPUS" "$@"
