#!/usr/bin/env bash
# Builds the test corpus (once) into target/corpus and prints `export` lines for the tests:
#   eval "$(testdata/corpus.sh)"
# Needs root and: umoci skopeo debootstrap jq zstd libcap2-bin python3 (see .ci/run).
# Without network to a Debian mirror only the hand-made images are built.
set -uo pipefail
cd "$(dirname "$0")/.."
DIR=${OBD_CORPUS_DIR:-$PWD/target/corpus}
LOG=$PWD/target/corpus-build.log
mkdir -p target
if [ "$(id -u)" != 0 ] || ! command -v umoci >/dev/null || ! command -v debootstrap >/dev/null; then
  echo "echo 'corpus: needs root, umoci and debootstrap; corpus tests will be skipped' >&2"
  exit 0
fi
if [ -f "$DIR/oci/index.json" ] && grep -q '"debian"' "$DIR/oci/index.json"; then
  echo "export OBD_CORPUS=$DIR/oci"
  exit 0
fi
if [ -f "$DIR/oci/index.json" ] && [ -f "$DIR/no-debian" ]; then
  echo "export OBD_CORPUS=$DIR/oci OBD_CORPUS_NO_DEBIAN=1"
  exit 0
fi
rm -rf "$DIR"
if bash testdata/make-test-images.sh --out "$DIR" --no-push > "$LOG" 2>&1; then
  echo "export OBD_CORPUS=$DIR/oci"
  exit 0
fi
tail -5 "$LOG" >&2
echo "corpus: the Debian images failed to build; using the hand-made images only" >&2
rm -rf "$DIR"
if bash testdata/make-test-images.sh --out "$DIR" --no-push --no-debian > "$LOG" 2>&1; then
  touch "$DIR/no-debian"
  echo "export OBD_CORPUS=$DIR/oci OBD_CORPUS_NO_DEBIAN=1"
else
  tail -5 "$LOG" >&2
  echo "echo 'corpus: build failed; corpus tests will be skipped' >&2"
fi
