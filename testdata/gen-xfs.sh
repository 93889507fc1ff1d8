#!/bin/bash
# Generates XFS test images with mkfs.xfs from a protofile, without mounting.
# Usage: gen-xfs.sh OUTDIR
#
# OUTDIR/tree is the source tree (the ground truth for contents, listings and
# link targets); OUTDIR/proto the protofile made from it; OUTDIR/v5.img a
# CRC-enabled (v5) filesystem and OUTDIR/v4.img a v4 one (crc=0, no ftype,
# 256-byte inodes), both holding the tree. OUTDIR/small-v5.img and
# small-v4.img are tiny filesystems (external log) whose used prefix seeds the
# fuzzer.
#
# The directories under /dirs have 5, 60, 200, 2000 and 20000 entries so the
# reader meets shortform, block, leaf and node directories; the files in
# /dirs/d20000 are allocated between the directory's own blocks, which
# fragments it into a btree-format data fork. Symlink targets range from a
# few bytes (inline in the inode) to 1000 bytes (remote blocks).
set -eu
out=${1:?usage: gen-xfs.sh OUTDIR}
command -v mkfs.xfs >/dev/null || { echo "gen-xfs.sh: mkfs.xfs not found (xfsprogs)" >&2; exit 127; }
command -v python3 >/dev/null || { echo "gen-xfs.sh: python3 not found" >&2; exit 127; }
mkdir -p "$out"

python3 - "$out" <<'EOF'
import os, random, sys

out = sys.argv[1]
tree = os.path.join(out, "tree")
rng = random.Random(1234)

def write(path, data):
    full = os.path.join(tree, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)

def link(path, target):
    full = os.path.join(tree, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    os.symlink(target, full)

write("etc/hostname", b"xfs-guest\n")
write("etc/fstab", b"UUID=x / xfs defaults 0 0\n")
write("etc/os-release", b'NAME="Test"\nID=test\nVERSION_ID="1"\n' * 20)
write("etc/empty", b"")
write("boot/vmlinuz", rng.randbytes(3 * 1024 * 1024 + 123))
write("usr/lib/big.bin", rng.randbytes(5 * 1024 * 1024))
write("usr/lib/odd.bin", rng.randbytes(4096 * 7 + 1))
write("a/b/c/d/deep.txt", b"deep\n" * 1000)
write("names/café.txt", b"utf-8 name\n")
write("names/" + "n" * 255, b"longest name\n")
os.makedirs(os.path.join(tree, "dirs/empty"))
for n in (5, 60, 200, 2000, 20000):
    for i in range(n):
        write(f"dirs/d{n}/f{i:05d}", f"entry {i} of {n}\n".encode())
link("links/short", "../etc/hostname")
link("links/abs", "/etc/hostname")
link("links/dir", "../a/b")
link("links/dangling", "nowhere")
link("links/long", "../" + "./" * 40 + "a/b/c/d/deep.txt")
link("links/remote", "../" + "./" * 300 + "a/b/c/d/deep.txt")
link("links/huge", "/" + "./" * 495 + "etc/hostname")
EOF

# The protofile, from the tree: sorted entries, modes from the tree.
python3 - "$out" >"$out/proto" <<'EOF'
import os, stat, sys

out = sys.argv[1]
tree = os.path.join(out, "tree")

def modestr(st):
    t = "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else "-"
    return f"{t}--{stat.S_IMODE(st.st_mode) & 0o777:03o}"

def walk(path, depth):
    pad = " " * depth
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            print(f"{pad}{name} l--777 0 0 {os.readlink(full)}")
        elif stat.S_ISDIR(st.st_mode):
            print(f"{pad}{name} {modestr(st)} 0 0")
            walk(full, depth + 1)
            print(f"{pad}$")
        else:
            print(f"{pad}{name} {modestr(st)} 1000 100 {full}")

print("/dev/null")
print("0 0")
print("d--755 0 0")
walk(tree, 1)
print("$")
EOF

mk() { # mk IMAGE SIZE MKFS-OPTIONS...
	img=$1 size=$2
	shift 2
	rm -f "$img"
	truncate -s "$size" "$img"
	mkfs.xfs -q -f -p "$out/proto" "$@" "$img"
}
mk "$out/v5.img" 512M -m crc=1 -i size=512 -L xfs-v5-label -m uuid=8e9a1f3c-2b4d-4e6f-9a0b-1c2d3e4f5a6b
# mkfs.xfs 6.1 writes remote symlink targets of v5 filesystems without the
# block header v5 requires (xfs_repair -n then says "bad symlink header").
# Put the header in place: magic, offset, bytes, crc32c, uuid, owner, daddr.
fix_remote_link() { # fix_remote_link IMAGE PATH
	ino=$(xfs_db -r -c "ls $(dirname "$2")" "$1" | awk -v n="$(basename "$2")" '$6 == n { print $2 }')
	fsb=$(xfs_db -r -c "inode $ino" -c "bmap" "$1" | awk '/^data offset 0 / { print $5 }')
	daddr=$(xfs_db -r -c "fsblock $fsb" -c "daddr" "$1" | awk '{ print $4 }')
	python3 - "$1" "$ino" "$daddr" <<'PY'
import struct, sys
img, ino, daddr = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF
with open(img, "r+b") as f:
    f.seek(0)
    sb = f.read(512)
    bs = struct.unpack(">I", sb[4:8])[0]
    uuid = sb[32:48]
    f.seek(daddr * 512)
    blk = f.read(bs)
    target = blk[: bs - 56].rstrip(b"\0")
    hdr = struct.pack(">IIII16sQQQ", 0x58534C4D, 0, len(target), 0, uuid, ino, daddr, 0)
    new = bytearray((hdr + target).ljust(bs, b"\0"))
    new[12:16] = struct.pack("<I", crc32c(bytes(new)))
    f.seek(daddr * 512)
    f.write(new)
PY
}
fix_remote_link "$out/v5.img" /links/remote
fix_remote_link "$out/v5.img" /links/huge
xfs_repair -n "$out/v5.img" >"$out/v5.repair" 2>&1 || { cat "$out/v5.repair" >&2; exit 1; }
mk "$out/v4.img" 512M -m crc=0 -n ftype=0 -i size=256 -L v4label -m uuid=0a1b2c3d-4e5f-4607-8899-aabbccddeeff
xfs_repair -n "$out/v4.img" >"$out/v4.repair" 2>&1 || { cat "$out/v4.repair" >&2; exit 1; }

# Tiny filesystems for fuzz seeds: mkfs refuses filesystems under 300 MiB
# unless it believes it runs under fstests, hence TEST_DIR.
mkdir -p "$out/small"
printf 'hello\n' >"$out/small/hello"
python3 -c 'import sys; sys.stdout.write("x" * 5000)' >"$out/small/five-k"
cat >"$out/small.proto" <<EOF
/dev/null
0 0
d--755 0 0
etc d--755 0 0
 hostname ---644 0 0 $out/small/hello
 big ---644 0 0 $out/small/five-k
 link l--777 0 0 ../etc/hostname
 $
d d--755 0 0
 a ---644 0 0 $out/small/hello
 b ---644 0 0 $out/small/hello
 c ---644 0 0 $out/small/hello
 $
$
EOF
for v in 4 5; do
	img="$out/small-v$v.img"
	rm -f "$img" "$img.log"
	truncate -s 16M "$img"
	truncate -s 16M "$img.log"
	crc=$((v == 5 ? 1 : 0))
	TEST_DIR=/nonexistent TEST_DEV=/nonexistent QA_CHECK_FS=1 \
		mkfs.xfs -q -f -p "$out/small.proto" -m crc=$crc -b size=1024 -d agcount=1 \
		-l logdev="$img.log",size=4m -i size=$((v == 5 ? 512 : 256)) "$img"
	rm -f "$img.log"
	# The seed is the used prefix of the image (the fuzz target zero-extends it).
	python3 - "$img" <<'PY'
import sys
p = sys.argv[1]
data = open(p, "rb").read().rstrip(b"\0")
open(p + ".seed", "wb").write(data)
PY
done
