#!/bin/bash
# The benchmark suite in one command: builds (or reuses) the test corpus and the bench-only
# `usr` image (~1 GiB of /usr in one gzip layer), builds the release binaries, and prints one
# table row per image (apply+commit in process; convertor end to end OCI layout -> layout and
# local registry -> registry, each beside the lower-bound pass of gunzip/unzstd + sha256 over
# the same layers). Extra arguments choose the corpus images (the `usr` row is skipped when
# images are named, unless `usr` is one of them).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(testdata/corpus.sh)"
cargo build --release --locked --bins -p obd-cli -p obd-bench >&2
want_usr=1
corpus_tags=()
if [ $# -gt 0 ]; then
  want_usr=0
  for t in "$@"; do
    if [ "$t" = usr ]; then want_usr=1; else corpus_tags+=("$t"); fi
  done
fi
if [ $# -eq 0 ] || [ ${#corpus_tags[@]} -gt 0 ]; then
  target/release/obd-bench suite "$OBD_CORPUS" "${corpus_tags[@]}"
fi
if [ $want_usr = 1 ]; then
  target/release/obd-bench suite "$(bench/usr-image.sh)" usr
fi
