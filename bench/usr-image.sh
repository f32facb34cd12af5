#!/bin/bash
# Builds (once) the bench-only image `usr`: one gzip layer holding the first ~1 GiB of regular
# files, directories and symlinks under /usr (sorted by path), as an OCI layout. Prints the
# layout path. Needs umoci and GNU tar.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${OBD_BENCH_USR:-$PWD/target/bench-usr}
if [ -f "$DIR/oci/index.json" ] && grep -q '"usr"' "$DIR/oci/index.json"; then
  echo "$DIR/oci"
  exit 0
fi
rm -rf "$DIR"
mkdir -p "$DIR"
python3 - "$DIR/list" <<'PY'
import os, sys
limit, total, out = 1 << 30, 0, []
for root, dirs, files in os.walk("/usr"):
    dirs.sort()
    out.append(root[1:])
    for f in sorted(files):
        p = os.path.join(root, f)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if os.path.islink(p) or os.path.isfile(p):
            out.append(p[1:])
            total += st.st_size if os.path.isfile(p) and not os.path.islink(p) else 0
    if total >= limit:
        break
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
tar -C / --no-recursion --numeric-owner -cf "$DIR/layer.tar" -T "$DIR/list" 2>/dev/null || true
umoci init --layout "$DIR/oci" >&2
umoci new --image "$DIR/oci:usr" >&2
umoci raw add-layer --image "$DIR/oci:usr" "$DIR/layer.tar" >&2
rm -f "$DIR/layer.tar" "$DIR/list"
echo "$DIR/oci"
