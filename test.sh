#!/usr/bin/env bash
# The whole test suite: formatting, lints, docs without broken links, unit/property/end-to-end
# tests, and the corpus tests (built into target/corpus on first run when root; see
# testdata/corpus.sh).
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
if [ -z "${OBD_CORPUS:-}" ]; then
  eval "$(testdata/corpus.sh)"
fi
cargo test --workspace --locked
