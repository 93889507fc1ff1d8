#!/bin/sh
# Generates VMDK test images with qemu-img/qemu-io from a deterministic raw
# pattern. Usage: gen-vmdk.sh OUTDIR
#
# Every image is listed in OUTDIR/images.txt as "<file> <raw-compare-mode>"
# so tests can iterate over them. All images are a few MiB virtual, except
# big-2gb.vmdk (4 GiB + 1 MiB virtual, twoGbMaxExtentSparse, little data).
set -eu
out=${1:?usage: gen-vmdk.sh OUTDIR}
mkdir -p "$out"
cd "$out"
QI=qemu-img
QIO=qemu-io

# The pattern: 5 MiB + 48 KiB (not a multiple of the 64 KiB grain), with
# constant runs, text (compressible but not trivially), a partial grain,
# and holes.
size=$((5 * 1024 * 1024 + 48 * 1024))
$QI create -q -f raw pattern.raw $size
$QIO -f raw -c "write -q -P 0x11 0 64k" -c "write -q -P 0x22 1M 300k" \
    -c "write -q -P 0x33 4100k 4k" -c "write -q -P 0x44 5140k 8k" pattern.raw >/dev/null
seq 1 400000 | head -c 1200000 | dd of=pattern.raw bs=4096 seek=600 conv=notrunc status=none

: > images.txt
for sub in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized; do
    $QI convert -q -f raw -O vmdk -o subformat=$sub pattern.raw "$sub.vmdk"
    echo "$sub.vmdk" >> images.txt
done

# A 4-layer chain: base + three snapshots, each writing distinct data,
# including partial grains (copy-on-write of the parent's grain).
$QI convert -q -f raw -O vmdk pattern.raw chain0.vmdk
prev=chain0.vmdk
for i in 1 2 3; do
    $QI create -q -f vmdk -b "$prev" -F vmdk "chain$i.vmdk"
    $QIO -f vmdk -c "write -q -P 0x$((i + 5))$i $((i * 512))k 64k" \
        -c "write -q -P 0x$((i + 6))0 $((i * 1024 + 100))k 3k" \
        -c "write -q -z $((i * 64))k 64k" "chain$i.vmdk" >/dev/null
    prev=chain$i.vmdk
    echo "chain$i.vmdk" >> images.txt
done

# A hand-written descriptor over split extents: FLAT pieces at offsets,
# a VMFS (flat) extent and a hosted sparse extent. (No ZERO extent: qemu
# drops those from the disk, and ignores RDONLY extents, so it cannot be
# the oracle for them.)
dd if=pattern.raw of=split-a.bin bs=512 count=2048 status=none
# split-b.bin holds 7 sectors of junk, then the next 2048 sectors of the pattern.
{ head -c 3584 /dev/zero | tr '\0' 'J'; dd if=pattern.raw bs=512 skip=2048 count=2048 status=none; } > split-b.bin
dd if=pattern.raw of=split-c.raw bs=512 skip=5120 count=2048 status=none
$QI convert -q -f raw -O vmdk split-c.raw split-c.vmdk
dd if=pattern.raw of=split-d.bin bs=512 skip=7168 count=3168 status=none
cat > split.vmdk <<'DESC'
# Disk DescriptorFile
version=1
CID=12345678
parentCID=ffffffff
createType="monolithicFlat"

# Extent description
RW 2048 FLAT "split-a.bin" 0
RW 2048 FLAT "split-b.bin" 7
RW 2048 SPARSE "split-c.vmdk"
RW 3168 VMFS "split-d.bin"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.geometry.cylinders = "10"
DESC
echo "split.vmdk" >> images.txt

# More than 2 GiB virtual across several 2 GiB sparse extents, with data
# straddling the first extent boundary and near the end.
$QI create -q -f vmdk -o subformat=twoGbMaxExtentSparse big-2gb.vmdk 4097M
$QIO -f vmdk -c "write -q -P 0x5a 2047M 2M" -c "write -q -P 0xa5 4096M 1M" big-2gb.vmdk >/dev/null
echo "big-2gb.vmdk" >> images.txt
