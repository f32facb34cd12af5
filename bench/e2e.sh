#!/bin/bash
# End-to-end benchmark through a local registry, every byte uploaded (obd-bench e2e).
#   bench/e2e.sh                      the datasci image (built once by bench/datasci-image.sh)
#   bench/e2e.sh LAYOUT TAG [ARGS]    any image of an OCI layout
# ARGS go to `obd-bench e2e`: --runs N, --convertor LABEL=PATH (repeatable, interleaved),
# --upstream SECS.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins -p obd-cli -p obd-bench >&2
if [ $# -ge 2 ] && [ "${1#--}" = "$1" ]; then
  layout=$1 tag=$2; shift 2
else
  layout=$(bench/datasci-image.sh) tag=datasci
fi
exec target/release/obd-bench e2e "$layout" "$tag" "$@"
