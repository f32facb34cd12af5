#!/usr/bin/env python3
"""Print a canonical listing of a directory tree, one line per path, for comparing a
filesystem we wrote (mounted) with a reference unpack (umoci): type, mode, owner, size,
content hash, symlink target, device numbers, xattrs, mtime (ns) and hard link group.

Usage: treelist.py ROOT [--ignore NAME ...] [--no-root-mtime]"""
import hashlib, os, stat, sys

def main():
    args = sys.argv[1:]
    root = args.pop(0)
    ignore = set()
    no_root_mtime = False
    while args:
        a = args.pop(0)
        if a == "--ignore":
            ignore.add(args.pop(0))
        elif a == "--no-root-mtime":
            no_root_mtime = True
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in ignore]
            filenames[:] = [f for f in filenames if f not in ignore]
        for n in dirnames + filenames:
            entries.append(os.path.normpath(os.path.join(rel, n)))
    entries.append(".")
    entries.sort(key=lambda p: os.fsencode(p))
    first_of_inode = {}
    for p in entries:
        st = os.lstat(os.path.join(root, p))
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            first_of_inode.setdefault(st.st_ino, p)
    for p in entries:
        full = os.path.join(root, p)
        st = os.lstat(full)
        m = st.st_mode
        f = [repr(os.fsencode(p))[2:-1], "mode=%o" % stat.S_IMODE(m), "uid=%d" % st.st_uid, "gid=%d" % st.st_gid]
        if stat.S_ISREG(m):
            h = hashlib.sha256()
            with open(full, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            f += ["file", "size=%d" % st.st_size, h.hexdigest()[:16]]
        elif stat.S_ISDIR(m):
            f += ["dir"]
        elif stat.S_ISLNK(m):
            f += ["symlink", "->" + repr(os.readlink(os.fsencode(full)))[2:-1]]
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            f += ["chr" if stat.S_ISCHR(m) else "blk", "dev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))]
        elif stat.S_ISFIFO(m):
            f += ["fifo"]
        else:
            f += ["other"]
        if not (p == "." and no_root_mtime) and not stat.S_ISLNK(m):
            f.append("mtime=%d" % st.st_mtime_ns)
        if st.st_ino in first_of_inode and first_of_inode[st.st_ino] != p:
            f.append("hardlink=" + repr(os.fsencode(first_of_inode[st.st_ino]))[2:-1])
        try:
            xs = sorted(os.listxattr(full, follow_symlinks=False))
        except OSError:
            xs = []
        for x in xs:
            try:
                v = os.getxattr(full, x, follow_symlinks=False)
            except OSError:
                continue
            f.append("xattr:%s=%s" % (x, v.hex()))
        print(" ".join(f))

main()
