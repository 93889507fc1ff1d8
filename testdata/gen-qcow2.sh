#!/usr/bin/env bash
# Generates the raw/qcow2 fixtures of the spine tests with qemu-img and qemu-io.
# Usage: testdata/gen-qcow2.sh OUTDIR
# Every fixture is small (tens of MiB virtual, a few MiB of data) and made
# from one deterministic pattern, so tests can compare against qemu-img.
set -euo pipefail
out=${1:?usage: gen-qcow2.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
cd "$out"

# 24 MiB + 3 sectors: not a multiple of any cluster size.
size=$((24 * 1024 * 1024 + 3 * 512))
python3 "$here/gen-pattern.py" pattern.raw "$size"

q() { qemu-img "$@" >/dev/null; }

q convert -f raw -O qcow2 -o compat=0.10 pattern.raw v2.qcow2
q convert -f raw -O qcow2 -o compat=1.1 pattern.raw v3.qcow2
for cs in 512 4096 65536 2097152; do
  q convert -f raw -O qcow2 -o cluster_size=$cs pattern.raw cs-$cs.qcow2
done
q convert -f raw -O qcow2 -c -o compression_type=zlib pattern.raw zlib.qcow2
q convert -f raw -O qcow2 -c -o compression_type=zstd pattern.raw zstd.qcow2
q convert -f raw -O qcow2 -c -o compression_type=zlib,cluster_size=4096 pattern.raw zlib-4k.qcow2
q convert -f raw -O qcow2 -o extended_l2=on,cluster_size=131072 pattern.raw extl2.qcow2

# Explicit zero clusters (v3 zero flag) over allocated data.
cp v3.qcow2 zeroes.qcow2
qemu-io -f qcow2 -c "write -z 1M 2M" -c "write -z 10M 64k" zeroes.qcow2 >/dev/null

# A backing chain of three, each layer writing its own data and zeroes.
q convert -f raw -O qcow2 pattern.raw chain-base.qcow2
q create -f qcow2 -b chain-base.qcow2 -F qcow2 chain-mid.qcow2
qemu-io -f qcow2 -c "write -P 0xa1 4M 1M" -c "write -z 6M 512k" -c "write -P 0xa2 23M 64k" chain-mid.qcow2 >/dev/null
q create -f qcow2 -b chain-mid.qcow2 -F qcow2 chain-top.qcow2
qemu-io -f qcow2 -c "write -P 0xb2 4608k 1M" -c "write -P 0xc3 20M 64k" -c "write -z 23M 4k" chain-top.qcow2 >/dev/null

# A qcow2 overlay on a raw base that is smaller than the overlay.
python3 "$here/gen-pattern.py" small-base.raw $((8 * 1024 * 1024)) 7 12
q create -f qcow2 -b small-base.raw -F raw over-raw.qcow2 16M
qemu-io -f qcow2 -c "write -P 0x5e 7M 2M" over-raw.qcow2 >/dev/null

# An empty disk and a fully allocated raw one.
q create -f qcow2 empty.qcow2 100M
python3 "$here/gen-pattern.py" dense.raw $((4 * 1024 * 1024)) 3 64
echo "fixtures in $out"
