#!/bin/bash
# Generates btrfs fixtures with the real btrfs-progs and kernel.
# Usage: gen-btrfs.sh OUTDIR
#
#   src/        the source tree (files, nested dirs, symlinks, a sparse file,
#               a hard link, a 1200-entry directory, a multi-MiB file)
#   plain.img   mkfs.btrfs --rootdir src, SINGLE data and metadata, no mount
#   main.img    DUP metadata, explicit hole extents (-O ^no-holes); made
#               through a loop mount (btrfs-progs 6.2 has no
#               mkfs --subvol/--compress): subvolumes @ (default), @home,
#               @/var/lib/machines (nested), a read-only snapshot
#               snapshots/1/snapshot of @, and directories compressed with
#               zlib, zstd and lzo.
#   subvol-list.txt, default.txt, ro-*.txt   what the btrfs CLI said while mounted
set -euo pipefail
out=$1
mkdir -p "$out"
cd "$out"

mk_tree() { # DIR: deterministic content
    local d=$1
    mkdir -p "$d"/etc "$d"/usr/share/doc/v2x "$d"/many "$d"/data "$d"/var/lib
    printf 'btrfs-guest\n' >"$d"/etc/hostname
    printf 'UUID=x / btrfs subvol=@,compress=zstd 0 0\n' >"$d"/etc/fstab
    printf 'NAME="Test Linux"\nID=testlinux\nVERSION_ID=1\n' >"$d"/usr/share/doc/v2x/os-release
    ln -s ../usr/share/doc/v2x/os-release "$d"/etc/os-release
    ln -s /usr/share/doc/v2x "$d"/doc-abs
    ln -s "$(printf 'long/%.0s' $(seq 1 150))target" "$d"/long-link
    ln "$d"/etc/hostname "$d"/etc/hostname.hardlink
    for i in $(seq -w 0 1199); do printf 'entry %s\n' "$i" >"$d/many/file-$i"; done
    python3 - "$d" <<'PY'
import random, sys, os
d = sys.argv[1]
r = random.Random(20261122)
with open(os.path.join(d, "data/big.bin"), "wb") as f:
    f.write(r.randbytes(5 * 1024 * 1024 + 12345))
with open(os.path.join(d, "data/empty"), "wb") as f:
    pass
with open(os.path.join(d, "data/inline.txt"), "wb") as f:
    f.write(b"small inline file\n" * 20)
# Sparse: data at 0, a hole, data at 3 MiB, a hole to the end.
with open(os.path.join(d, "data/sparse.bin"), "wb") as f:
    f.write(r.randbytes(8192))
    f.seek(3 << 20)
    f.write(r.randbytes(10000))
    f.truncate(6 << 20)
PY
    mkdir -p "$d"/a/b/c/d/e
    printf 'deep\n' >"$d"/a/b/c/d/e/leaf.txt
}

text() { # N: N lines of compressible text
    python3 -c "
import sys
n = int(sys.argv[1])
sys.stdout.write(''.join('line %07d: the quick brown fox jumps over the lazy dog\n' % i for i in range(n)))" "$1"
}

mk_tree src

# 1. --rootdir, SINGLE profiles, no mount.
truncate -s 256M plain.img
mkfs.btrfs -q -f -L v2x-plain -U 5c0ffee0-1111-4222-8333-444455556666 \
    -m single -d single --rootdir src plain.img

# 2. Subvolumes, snapshot, compression: through a loop mount.
truncate -s 512M main.img
mkfs.btrfs -q -f -O ^no-holes -L v2x-main -U 5c0ffee0-aaaa-4bbb-8ccc-ddddeeeeffff main.img
mnt=$(mktemp -d)
cleanup() { umount "$mnt" 2>/dev/null || true; rmdir "$mnt" 2>/dev/null || true; }
trap cleanup EXIT
mount -o loop main.img "$mnt"
btrfs -q subvolume create "$mnt/@"
btrfs -q subvolume create "$mnt/@home"
cp -a src/. "$mnt/@/"
mkdir -p "$mnt/@/var/lib"
btrfs -q subvolume create "$mnt/@/var/lib/machines"
printf 'inside a nested subvolume\n' >"$mnt/@/var/lib/machines/marker"
mkdir -p "$mnt/@home/user/docs"
printf 'hello from home\n' >"$mnt/@home/user/docs/note.txt"
ln -s docs/note.txt "$mnt/@home/user/note-link"
for alg in zlib zstd lzo; do
    mkdir "$mnt/@/$alg"
    btrfs property set "$mnt/@/$alg" compression "$alg"
    text 40000 >"$mnt/@/$alg/text.txt"       # ~2.4 MiB: many 128 KiB compressed extents
    text 20 >"$mnt/@/$alg/small.txt"         # compressed inline extent
    # Partly overwritten: a compressed extent referenced with an offset.
    dd if=/dev/urandom of="$mnt/@/$alg/text.txt" bs=4096 seek=37 count=3 conv=notrunc status=none
done
fallocate -l 1M "$mnt/@/data/prealloc.bin"
printf 'written head\n' | dd of="$mnt/@/data/prealloc.bin" conv=notrunc status=none
sync
mkdir -p "$mnt/snapshots/1"
btrfs -q subvolume snapshot -r "$mnt/@" "$mnt/snapshots/1/snapshot"
# Changes after the snapshot, so @ and its snapshot differ.
printf 'renamed-guest\n' >"$mnt/@/etc/hostname"
rm "$mnt/@/data/inline.txt"
id=$(btrfs subvolume list "$mnt" | awk '$NF == "@" {print $2}')
btrfs subvolume set-default "$id" "$mnt"
sync
btrfs subvolume list -a "$mnt" >subvol-list-a.txt
btrfs subvolume list "$mnt" >subvol-list.txt
btrfs subvolume get-default "$mnt" >default.txt
for s in @ @home snapshots/1/snapshot @/var/lib/machines; do
    btrfs property get -ts "$mnt/$s" ro >"ro-$(echo "$s" | tr / _).txt"
done
umount "$mnt"
btrfs check --readonly main.img >check-main.txt 2>&1
btrfs check --readonly plain.img >check-plain.txt 2>&1
