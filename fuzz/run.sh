#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time, one after the other (one
# in-process libFuzzer job per target).
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Needs cargo-fuzz (`cargo install --locked cargo-fuzz`). Works on a stable toolchain:
# cargo-fuzz passes nightly-only flags (-Zsanitizer), so RUSTC_BOOTSTRAP=1 is set.
# Seeds are generated afresh into fuzz/corpus/<target> by the `seedgen` binary (which the
# build also makes); what the fuzzer learns is kept there between runs. Crashes land in
# fuzz/artifacts/<target>/; the script exits non-zero if any target found one, after
# printing a summary table. Reproduce one with `fuzz/run.sh --repro TARGET FILE`.
set -uo pipefail
cd "$(dirname "$0")"

export RUSTC_BOOTSTRAP=1
# `cargo +stable` where rustup is present, so a local nightly default does not matter.
cargo_fuzz=(cargo fuzz)
if command -v rustup >/dev/null 2>&1 && rustup run stable true >/dev/null 2>&1; then
  cargo_fuzz=(cargo +stable fuzz)
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
bindir="${CARGO_TARGET_DIR:-target}/$triple/release"

if [ "${1:-}" = "--repro" ]; then
  "${cargo_fuzz[@]}" run "$2" "$3" -- -rss_limit_mb=1024
  exit $?
fi

secs=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <("${cargo_fuzz[@]}" list | grep -vx seedgen)
fi

log() { echo "[fuzz $(date +%T)] $*" >&2; }
log "building ${#targets[@]} targets"
"${cargo_fuzz[@]}" build || exit 1
if [ ! -x "$bindir/seedgen" ]; then
  log "seedgen was not built" && exit 1
fi

mkdir -p corpus artifacts logs
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
"$bindir/seedgen" "$seeds" || exit 1

failed=0
rows=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  [ -d "$seeds/$t" ] && cp -n "$seeds/$t"/* "corpus/$t/" 2>/dev/null
  before=$(find "artifacts/$t" -type f | wc -l)
  log "running $t for ${secs}s"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb/-malloc_limit_mb: any
  # allocation past 1 GiB is a crash (unbounded allocations from crafted sizes).
  "$bindir/$t" "corpus/$t" \
    -artifact_prefix="artifacts/$t/" \
    -max_total_time="$secs" -rss_limit_mb=1024 -malloc_limit_mb=1024 -timeout=10 \
    -max_len=262144 -print_final_stats=1 \
    >"logs/$t.log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)
  after=$(find "artifacts/$t" -type f | wc -l)
  crashes=$((after - before))
  if [ $rc -ne 0 ] || [ $crashes -ne 0 ]; then
    failed=1
    log "$t failed (exit $rc); last lines of fuzz/logs/$t.log:"
    tail -40 "logs/$t.log" >&2
    [ $crashes -eq 0 ] && crashes="?"
  fi
  rows+=("$(printf '%-18s %12s %8s' "$t" "${execs:-?}" "$crashes")")
done

printf '%-18s %12s %8s\n' target executions crashes
printf '%s\n' "${rows[@]}"
if [ $failed -ne 0 ]; then
  echo "fuzzing found crashes: see fuzz/artifacts/ and fuzz/logs/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crashes"
