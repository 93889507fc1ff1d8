#!/bin/sh
# Generates VHD (vpc), VHDX and VDI test images with qemu-img from one
# deterministic raw pattern. Usage: gen-vhd.sh OUTDIR
#
# The pattern has data at offset 0, an unaligned run of sectors, a run that
# crosses 1 MiB / 2 MiB block boundaries, data past 32 MiB and the last
# sector, with holes in between, so readers see allocated, partial and
# unallocated blocks.
set -eu
out=${1:?usage: gen-vhd.sh OUTDIR}
command -v qemu-img >/dev/null || { echo "gen-vhd.sh: qemu-img not found" >&2; exit 127; }
mkdir -p "$out"
raw="$out/pattern.raw"
size=$((40 * 1024 * 1024))

rm -f "$raw"
qemu-img create -q -f raw "$raw" "$size"
# put BYTES of a numbered text pattern named TAG at OFFSET
put() {
	awk -v tag="$1" 'BEGIN { for (i = 0; ; i++) printf "%s-%07d|", tag, i }' 2>/dev/null |
		head -c "$3" |
		dd of="$raw" bs=512 seek="$(($2 / 512))" conv=notrunc iflag=fullblock status=none
}
put head 0 65536
put odd $((1024 * 1024 + 3 * 512)) 1536
put cross $((5 * 1024 * 1024 - 4096)) $((2 * 1024 * 1024 + 8192))
put far $((33 * 1024 * 1024)) 131072
put last $((size - 512)) 512

cv() { # cv FORMAT OPTIONS NAME
	rm -f "$out/$3"
	qemu-img convert -q -f raw -O "$1" ${2:+-o "$2"} "$raw" "$out/$3"
}
cv vpc subformat=dynamic,force_size=on vpc-dynamic.vhd
cv vpc subformat=fixed,force_size=on vpc-fixed.vhd
# Without force_size qemu rounds the size up to a CHS geometry and writes
# creator "qemu"; the size then comes from current_size = CHS size.
cv vpc subformat=dynamic vpc-dynamic-chs.vhd
for bs in 1M 8M 32M; do
	cv vhdx subformat=dynamic,block_size=$bs "vhdx-dynamic-$bs.vhdx"
done
cv vhdx subformat=fixed,block_size=8M vhdx-fixed-8M.vhdx
cv vdi static=off vdi-dynamic.vdi
cv vdi static=on vdi-static.vdi
