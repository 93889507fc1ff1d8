#!/bin/sh
# Regenerates the seeds in fuzz/corpus/{ext4,ntfs,fat}/: tiny filesystems with
# a directory, a file, a relative and a long symlink. Needs e2fsprogs,
# ntfs-3g (mkntfs, plus a FUSE mount as root) and dosfstools + mtools.
# The NTFS seed is 1.1 MiB: mkntfs makes nothing smaller.
set -eu
root=$(cd "$(dirname "$0")/../corpus" && pwd)
tmp=$(mktemp -d)
trap 'umount "$tmp/m" 2>/dev/null || true; rm -rf "$tmp"' EXIT
cd "$tmp"
mkdir -p t/d && echo hi > t/a && ln -s ../a t/d/l
ln -s "/$(printf 'x%.0s' $(seq 1 80))" t/long
for k in ext2 ext4; do
  truncate -s 128K $k.img
  mkfs.$k -q -F -b 1024 -N 16 -O ^resize_inode -d t $k.img 2>/dev/null
  cp $k.img "$root/ext4/$k-128k.img"
done
truncate -s 1100K ntfs.img
mkntfs -F -f -q -L seed ntfs.img >/dev/null 2>&1
mkdir m && ntfs-3g ntfs.img m && mkdir m/Dir && echo hi > m/Dir/File.txt && umount m
cp ntfs.img "$root/ntfs/min-1100k.img"
mkfs.vfat -C fat12.img 64 >/dev/null
MTOOLS_SKIP_CHECK=1 mmd -i fat12.img ::/DIR
MTOOLS_SKIP_CHECK=1 mcopy -i fat12.img t/a "::/DIR/Long name.txt"
cp fat12.img "$root/fat/fat12-64k.img"
