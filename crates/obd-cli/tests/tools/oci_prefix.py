#!/usr/bin/env python3
"""Make an OCI layout OUT holding image TAG of LAYOUT cut to its first K layers (config
diff_ids cut likewise), tagged "prefix". Blobs are hard-linked, not copied.

Usage: oci_prefix.py LAYOUT TAG K OUT"""
import hashlib, json, os, sys

layout, tag, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def blob(d):
    return os.path.join(layout, "blobs", *d.split(":"))
idx = json.load(open(os.path.join(layout, "index.json")))
desc = [m for m in idx["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag][0]
man = json.load(open(blob(desc["digest"])))
cfg = json.load(open(blob(man["config"]["digest"])))
os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)
def put(b):
    h = hashlib.sha256(b).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", h), "wb") as f:
        f.write(b)
    return "sha256:" + h, len(b)
for l in man["layers"][:k]:
    dst = os.path.join(out, "blobs", *l["digest"].split(":"))
    if not os.path.exists(dst):
        try:
            os.link(blob(l["digest"]), dst)
        except OSError:
            import shutil; shutil.copyfile(blob(l["digest"]), dst)
cfg["rootfs"]["diff_ids"] = cfg["rootfs"]["diff_ids"][:k]
cfg.pop("history", None)
cd, cs = put(json.dumps(cfg).encode())
man["layers"] = man["layers"][:k]
man["config"]["digest"], man["config"]["size"] = cd, cs
man.setdefault("mediaType", "application/vnd.oci.image.manifest.v1+json")
md, ms = put(json.dumps(man).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": man["mediaType"], "digest": md, "size": ms,
    "annotations": {"org.opencontainers.image.ref.name": "prefix"}}]}, open(os.path.join(out, "index.json"), "w"))
open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
