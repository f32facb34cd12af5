#!/bin/bash
# Builds (once) the bench-only image `datasci`, a 5-layer data-science image like the one
# issue 18 measures upstream on, as an OCI layout; prints the layout path.
#   1. Debian bookworm minbase (debootstrap; the corpus's cached tar when it has one)
#   2. a python toolchain: python3, pip, venv, python3-dev, build-essential
#   3. jupyter + numpy/scipy/pandas/scikit-learn/matplotlib (Debian's packages)
#   4. ~600 MB of mixed data files (CSV, JSON lines, float arrays, incompressible bytes,
#      zero-heavy files, thousands of small files), generated from a fixed seed
#   5. a cleanup layer: docs, man pages, apt lists, caches and part of the data deleted
#      (file and directory whiteouts), a few files changed
# Needs root, debootstrap, umoci, python3 and a Debian mirror (packages only: nothing else
# from the internet). Takes several minutes the first time; later calls print the path.
# Env: OBD_BENCH_DATASCI (layout parent, default target/bench-datasci), MIRROR, SUITE.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${OBD_BENCH_DATASCI:-$PWD/target/bench-datasci}
if [ -f "$DIR/oci/index.json" ] && grep -q '"datasci"' "$DIR/oci/index.json"; then
  echo "$DIR/oci"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "datasci-image.sh: must run as root (chroot)" >&2; exit 1; }
for c in debootstrap umoci python3 chroot; do
  command -v $c >/dev/null || { echo "datasci-image.sh: missing $c" >&2; exit 1; }
done
mirror() {
  local u
  u=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null)
  [ -n "$u" ] || u=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  echo "${u:-http://deb.debian.org/debian}"
}
MIRROR=${MIRROR:-$(mirror)}
SUITE=${SUITE:-bookworm}
log() { echo "[datasci $(date +%T)] $*" >&2; }
rm -rf "$DIR"
mkdir -p "$DIR"
L=$DIR/oci
B=$DIR/bundle
R=$B/rootfs

cache=$PWD/target/corpus/build/minbase-$SUITE.tar
if [ ! -f "$cache" ]; then
  cache=$DIR/minbase.tar
  log "debootstrap --variant=minbase $SUITE from $MIRROR"
  debootstrap --variant=minbase "$SUITE" "$DIR/minbase" "$MIRROR" > "$DIR/debootstrap.log" 2>&1
  rm -rf "$DIR"/minbase/var/lib/apt/lists/* "$DIR"/minbase/var/cache/apt/*.bin \
    "$DIR"/minbase/var/cache/apt/archives/*.deb "$DIR"/minbase/dev/* \
    "$DIR"/minbase/etc/resolv.conf "$DIR"/minbase/etc/hostname
  tar --numeric-owner --xattrs --xattrs-include='*' -C "$DIR/minbase" -cf "$cache" .
  rm -rf "$DIR/minbase"
fi

umoci init --layout "$L" >&2
umoci new --image "$L:empty" >&2
umoci config --image "$L:empty" --config.cmd /usr/bin/python3 \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.workingdir /data >&2
umoci unpack --image "$L:empty" "$B" >/dev/null
tar --numeric-owner --xattrs --xattrs-include='*' -xpf "$cache" -C "$R"
log "layer 1: minbase"
umoci repack --refresh-bundle --history.created_by "debootstrap --variant=minbase $SUITE" --image "$L:l1" "$B" >&2

# apt inside the chroot: a few device nodes, /proc and the host's resolver, all removed
# before each repack.
enter() {
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  for n in "null c 1 3" "zero c 1 5" "random c 1 8" "urandom c 1 9"; do
    set -- $n; [ -e "$R/dev/$1" ] || mknod -m 666 "$R/dev/$1" "$2" "$3" "$4"
  done
  mount -t proc proc "$R/proc"
}
leave() {
  umount "$R/proc" 2>/dev/null || true
  rm -f "$R/etc/resolv.conf" "$R"/dev/{null,zero,random,urandom}
}
trap leave EXIT
apt_install() {
  enter
  chroot "$R" /bin/sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $* >/dev/null && apt-get clean"
  leave
}
log "layer 2: python toolchain"
apt_install python3 python3-pip python3-venv python3-dev python3-setuptools python3-wheel build-essential git
umoci repack --refresh-bundle --history.created_by "apt-get install python3 python3-pip python3-venv python3-dev build-essential git" --image "$L:l2" "$B" >&2

log "layer 3: jupyter and the scientific stack"
apt_install jupyter-notebook python3-ipykernel python3-numpy python3-scipy python3-pandas python3-sklearn python3-matplotlib python3-seaborn python3-statsmodels
umoci repack --refresh-bundle --history.created_by "apt-get install jupyter-notebook numpy scipy pandas sklearn matplotlib" --image "$L:l3" "$B" >&2

log "layer 4: ~600 MB of data files"
python3 - "$R/data" <<'PY'
import json, os, random, struct, sys, zlib
root = sys.argv[1]
rng = random.Random(20261202)
os.makedirs(root, exist_ok=True)
def put(rel, data):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))
         for _ in range(5000)]
total = 0
# CSV tables (text, compresses ~4x): 180 MB
for i in range(12):
    rows = ["id,name,city,value,score,flag,ts"]
    size = 0
    while size < 15 << 20:
        r = "%d,%s,%s,%.4f,%d,%s,2026-%02d-%02dT%02d:%02d:%02d" % (
            rng.randrange(10**9), rng.choice(words), rng.choice(words), rng.gauss(0, 1e3),
            rng.randrange(100), rng.choice("TF"), rng.randint(1, 12), rng.randint(1, 28),
            rng.randrange(24), rng.randrange(60), rng.randrange(60))
        rows.append(r); size += len(r) + 1
    b = ("\n".join(rows) + "\n").encode(); put("tables/table-%02d.csv" % i, b); total += len(b)
# JSON lines: 60 MB
for i in range(4):
    out = []; size = 0
    while size < 15 << 20:
        s = json.dumps({"user": rng.choice(words), "tags": rng.sample(words, 3),
                        "v": [round(rng.random(), 5) for _ in range(4)], "ok": rng.random() < .5})
        out.append(s); size += len(s) + 1
    b = ("\n".join(out) + "\n").encode(); put("events/part-%d.jsonl" % i, b); total += len(b)
# float32 arrays (smooth series with noise: partly compressible): 150 MB
for i in range(10):
    n = (15 << 20) // 4; x = 0.0; vals = []
    for k in range(n):
        x += rng.gauss(0, 0.01)
        vals.append(x if k % 7 else 0.0)
    b = struct.pack("<%df" % n, *vals); put("arrays/series-%02d.f32" % i, b); total += len(b)
# incompressible bytes (images, archives already compressed): 150 MB
for i in range(6):
    b = rng.randbytes(25 << 20); put("media/blob-%d.bin" % i, b); total += len(b)
# zero-heavy files (sparse checkpoints): 40 MB
for i in range(4):
    b = bytearray(10 << 20)
    for k in range(0, len(b), 1 << 16):
        b[k:k + 512] = rng.randbytes(512)
    put("ckpt/ckpt-%d.pt" % i, bytes(b)); total += len(b)
# many small files (a dataset of snippets): ~20,000 files, ~25 MB
for d in range(100):
    for k in range(200):
        n = rng.choice([64, 300, 900, 2000, 4096])
        b = (" ".join(rng.choice(words) for _ in range(n // 6)) + "\n").encode()
        if rng.random() < .2:
            b = zlib.compress(b)
        put("samples/%03d/%05d.txt" % (d, k), b); total += len(b)
print("data: %.1f MB" % (total / 1e6), file=sys.stderr)
PY
find "$R/data" -exec touch -h -d @1700000000 {} +
umoci repack --refresh-bundle --history.created_by "COPY data /data" --image "$L:l4" "$B" >&2

log "layer 5: cleanup"
rm -rf "$R"/usr/share/doc/* "$R"/usr/share/man "$R"/usr/share/info "$R"/var/lib/apt/lists/* \
  "$R"/var/cache/debconf/*-old "$R"/data/media/blob-5.bin "$R"/data/samples/0[0-4]?
find "$R/usr/lib/python3" -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
find "$R/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'en*' ! -name 'locale.alias' -exec rm -rf {} +
echo "data-science bench image" > "$R/etc/motd"
chmod 600 "$R/etc/issue"
umoci repack --refresh-bundle --history.created_by "cleanup docs, caches, part of the data" --image "$L:datasci" "$B" >&2
for t in empty l1 l2 l3 l4; do umoci rm --image "$L:$t" >&2; done
umoci gc --layout "$L" >&2
trap - EXIT
rm -rf "$B"
log "done: $L"
echo "$L"
