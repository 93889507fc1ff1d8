#!/bin/bash
# Builds ext filesystem images for the ext4 writer tests (tests/ext4_write.rs),
# without root: trees are packed with `mkfs -d`, htree indexes are built by
# `e2fsck -fyD`, and the partitioned disk is assembled with sfdisk + dd.
#
#   ext4.img     Debian 12 default features (metadata_csum, 64bit, flex_bg), 4 KiB blocks
#   nocsum.img   ext4 without metadata_csum, with uninit_bg (crc16 descriptors)
#   ext3.img     ext3: no extents, block-mapped files
#   small-bg.img ext4 with 1024-block groups, so big files reach BLOCK_UNINIT groups
#   k1.img       ext4 with 1 KiB blocks (first data block 1)
#   disk.img     MBR disk, partition 1 (at 1 MiB) holds a copy of ext4.img
#
# Every image holds the same tree: /etc/hostname (10 bytes), /lin (a linear
# directory of 5 files), /big (an htree directory of 3000 files; only in
# ext4.img, nocsum.img and disk.img), /link.
# Usage: gen-ext4w.sh OUTDIR
set -euo pipefail
out=${1:?usage: gen-ext4w.sh OUTDIR}
mkdir -p "$out"
work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000

t=$work/tree
mkdir -p "$t/etc" "$t/lin" "$t/big"
printf 'debian-vm\n' >"$t/etc/hostname"
for i in 1 2 3 4 5; do printf 'file %s\n' "$i" >"$t/lin/f$i"; done
ln -s etc/hostname "$t/link"
# The small tree lacks /big; the full one adds it.
cp -a "$t" "$work/small"
for i in $(seq -w 0 2999); do printf '%s\n' "$i" >"$t/big/entry-with-a-longish-name-$i"; done

mk() { # mk TREE NAME MKFS-ARGS... (the filesystem is 64 MiB)
    local tree=$1 name=$2; shift 2
    mkfs.ext4 -q -F -U 6b1c5f34-1b0c-4a4c-9b0a-3f1d2c3b4a59 \
        -E hash_seed=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 -d "$tree" "$@" "$out/$name" 64M
    # Index every multi-block directory, as a long-lived guest would have.
    e2fsck -fyD "$out/$name" >/dev/null 2>&1 || [ $? -le 1 ]
    e2fsck -fn "$out/$name" >/dev/null
}
mk "$t" ext4.img -b 4096
mk "$t" nocsum.img -b 4096 -O ^metadata_csum,uninit_bg
mk "$work/small" ext3.img -t ext3
mk "$work/small" small-bg.img -g 1024
mk "$work/small" k1.img -b 1024

truncate -s 80M "$out/disk.img"
printf 'label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=131072, type=83\n' | sfdisk -q "$out/disk.img"
dd if="$out/ext4.img" of="$out/disk.img" bs=1M seek=1 conv=notrunc status=none
