#!/usr/bin/env python3
"""Builds the whole-system test's initramfs (newc cpio, gzip) without root.

Usage: initramfs.py OUT.cpio.gz KERNEL_ROOT BUSYBOX MODULE... -- DEST=SRC...

KERNEL_ROOT is an unpacked Debian linux-image package; each MODULE (e.g. vivid, 9pnet_virtio) is
looked up under its lib/modules/<version>/kernel and added with every module it depends on (from
each .ko's .modinfo `depends=`), in load order, as /lib/modules/NAME.ko, listed in
/modules.order. DEST=SRC pairs add host files (mode kept). /dev/console is created.
"""
import gzip
import os
import subprocess
import sys
import tempfile


def modinfo_depends(ko):
    with tempfile.NamedTemporaryFile() as tmp:
        subprocess.run(
            ["aarch64-linux-gnu-objcopy", "-O", "binary", "--only-section=.modinfo", ko, tmp.name],
            check=True,
        )
        data = open(tmp.name, "rb").read()
    for entry in data.split(b"\0"):
        if entry.startswith(b"depends="):
            return [d for d in entry[len(b"depends="):].decode().split(",") if d]
    return []


def module_index(kernel_root):
    base = os.path.join(kernel_root, "lib", "modules")
    (version,) = os.listdir(base)
    index = {}
    for dirpath, _, files in os.walk(os.path.join(base, version, "kernel")):
        for f in files:
            if f.endswith(".ko"):
                index[f[:-3].replace("-", "_")] = os.path.join(dirpath, f)
    return index


def load_order(wanted, index):
    order, seen = [], set()

    def visit(name):
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            sys.exit(f"initramfs.py: module {name} not found in the kernel package")
        for dep in modinfo_depends(index[name]):
            visit(dep)
        order.append(name)

    for w in wanted:
        visit(w)
    return order


class Cpio:
    def __init__(self):
        self.out = bytearray()
        self.ino = 1

    def add(self, name, mode, data=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0]
        self.ino += 1
        self.out += b"070701" + b"".join(b"%08X" % f for f in fields) + name_b
        self.out += b"\0" * (-len(self.out) % 4)
        self.out += data
        self.out += b"\0" * (-len(self.out) % 4)

    def dir(self, name):
        self.add(name, 0o040755)

    def file(self, name, data, mode=0o100644):
        self.add(name, mode, data)

    def finish(self):
        self.add("TRAILER!!!", 0)
        return bytes(self.out)


def main():
    args = sys.argv[1:]
    sep = args.index("--")
    out, kernel_root, busybox, *modules = args[:sep]
    files = [a.split("=", 1) for a in args[sep + 1:]]
    index = module_index(kernel_root)
    order = load_order(modules, index)
    c = Cpio()
    for d in ["bin", "dev", "proc", "sys", "tmp", "results", "lib", "lib/modules", "etc"]:
        c.dir(d)
    c.add("dev/console", 0o020600, rdev=(5, 1))
    c.file("bin/busybox", open(busybox, "rb").read(), 0o100755)
    for name in order:
        c.file(f"lib/modules/{name}.ko", open(index[name], "rb").read())
    c.file("modules.order", ("\n".join(order) + "\n").encode())
    made = set()
    for dest, src in files:
        parts = dest.strip("/").split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in made:
                c.dir(d)
                made.add(d)
        mode = 0o100755 if os.access(src, os.X_OK) else 0o100644
        c.file(dest.strip("/"), open(src, "rb").read(), mode)
    with gzip.open(out, "wb", compresslevel=1) as f:
        f.write(c.finish())
    print(f"initramfs {out}: modules {' '.join(order)}")


if __name__ == "__main__":
    main()
