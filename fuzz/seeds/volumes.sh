#!/bin/sh
# Regenerates the seeds in fuzz/corpus/partitions/ (small disks made by
# sfdisk) and fuzz/corpus/lvm_metadata/ (LVM text metadata, taken from a
# vgcfgbackup of the gen-volumes.sh fixtures when given as $1, plus a
# hand-written striped VG; with the fixture directory as $2, the first 24 KiB
# of its whole-disk PV: label, metadata area header and metadata). Needs sfdisk and python3; every seed stays small.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
parts=$here/corpus/partitions
meta=$here/corpus/lvm_metadata
mkdir -p "$parts" "$meta"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
truncate -s 96K mbr.img
sfdisk -q mbr.img <<'T'
label: dos
start=1, size=20, type=83, bootable
start=21, size=150, type=5
start=23, size=30, type=82
start=60, size=30, type=83
T
truncate -s 64K gpt.img
sfdisk -q gpt.img <<'T'
label: gpt
first-lba: 34
start=34, size=20, type=U, name="esp"
start=54, size=30, type=L, name="root", attrs="LegacyBIOSBootable"
T
truncate -s 4K empty.img
cp mbr.img gpt.img empty.img "$parts/"
if [ $# -gt 0 ]; then
    grep -v '^#' "$1" >"$meta/vgcfgbackup.txt"
fi
if [ $# -gt 1 ]; then
    head -c 24576 "$2/lvm-disk2.img" >"$parts/lvm-pv-head.img"
fi
cat >"$meta/striped.txt" <<'T'
vg { id = "x" seqno = 2 extent_size = 8
  physical_volumes { pv0 { id = "a" pe_start = 8 pe_count = 9 } pv1 { id = "b" pe_start = 8 pe_count = 9 } }
  logical_volumes { lv { id = "l" status = ["VISIBLE"] segment_count = 2
    segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 2 stripe_size = 4 stripes = ["pv0", 0, "pv1", 0] }
    segment2 { start_extent = 2 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv1", 5] } } }
}
contents = "Text Format Volume Group" version = 1 description = "a \"quoted\" \\ text"
T
