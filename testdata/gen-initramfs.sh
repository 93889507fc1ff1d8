#!/bin/bash
# Builds initramfs fixtures with the real tools: cpio (newc and crc), gzip,
# xz (--check=crc32, as the kernel wants), lzma, zstd, lz4 (legacy frames,
# `lz4 -l`) and bzip2, plus Debian-style images with an uncompressed early
# microcode archive in front. Usage: gen-initramfs.sh OUTDIR
set -euo pipefail
out=$1
mkdir -p "$out"
cd "$out"
export LC_ALL=C TZ=UTC
stamp=202401010000

# The main tree: a tiny initramfs with a virtio_blk module.
rm -rf tree early second
mkdir -p tree/usr/bin tree/usr/lib/modules/6.1.0-test/kernel/drivers/block \
         tree/usr/lib/modules/6.1.0-test/kernel/drivers/net tree/etc tree/dev
printf '#!/bin/sh\nexec /sbin/init\n' > tree/init
chmod 755 tree/init
printf 'initrd-host\n' > tree/etc/hostname
printf 'fake virtio_blk module\n' > tree/usr/lib/modules/6.1.0-test/kernel/drivers/block/virtio_blk.ko
printf 'fake virtio_net module\n' | xz --check=crc32 > tree/usr/lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko.xz
# A file larger than the reader's 64 KiB window, not all one byte.
seq 1 60000 > tree/usr/bin/big
ln -s usr/bin tree/bin
mkdir -p tree/empty-dir
find tree -exec touch -h -t $stamp {} +

# The early microcode archive, as Debian's mkinitramfs prepends it.
mkdir -p early/kernel/x86/microcode
printf 'microcode blob\n' > early/kernel/x86/microcode/GenuineIntel.bin
find early -exec touch -h -t $stamp {} +

# A second small tree for a second compressed segment.
mkdir -p second/etc
printf 'from the second segment\n' > second/etc/late.conf
find second -exec touch -h -t $stamp {} +

# Names with "./" (find .) for the main tree, without for the others.
(cd tree && find . | sort | cpio --quiet -o -H newc --reproducible) > main.cpio
(cd tree && find . | sort | cpio --quiet -o -H crc --reproducible) > main-crc.cpio
(cd early && find kernel | sort | cpio --quiet -o -H newc --reproducible) > early.cpio
(cd second && find etc | sort | cpio --quiet -o -H newc --reproducible) > second.cpio

gzip -n -9 -c main.cpio > main.gz
xz --check=crc32 -c main.cpio > main.xz
xz --format=lzma -c main.cpio > main.lzma
zstd -q -19 -c main.cpio > main.zst
lz4 -q -l -c main.cpio > main.lz4
bzip2 -c main.cpio > main.bz2
gzip -n -c second.cpio > second.gz
xz --check=crc32 -c second.cpio > second.xz

# Debian-like: early cpio, then the compressed main archive.
cat early.cpio main.gz > initrd-early-gz.img
cat early.cpio main.zst > initrd-early-zst.img
cat early.cpio main.xz > initrd-early-xz.img
# Two compressed segments after each other, with zero padding between.
cat main.gz > initrd-gz-pad-xz.img
head -c 13 /dev/zero >> initrd-gz-pad-xz.img
cat second.xz >> initrd-gz-pad-xz.img
cat main.zst second.gz > initrd-zst-gz.img
cat main.lzma second.gz > initrd-lzma-gz.img
cat main.xz second.gz > initrd-xz-gz.img
cat early.cpio main.lz4 > initrd-early-lz4.img
cat early.cpio main.bz2 > initrd-early-bz2.img
# One zstd segment made of two frames (the cpio archive is split mid-file).
{ head -c 100000 main.cpio | zstd -q -c; tail -c +100001 main.cpio | zstd -q -c; } > initrd-zst-2frames.img
