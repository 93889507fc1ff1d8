#!/bin/sh
# Regenerates the qemu-made seeds in fuzz/corpus/qcow2/ (the "fuzzed-*" entries
# there came from cargo-fuzz runs and are kept as found). Needs qemu-img,
# qemu-io and python3. Every image stays under 100 KiB.
set -eu
out=$(cd "$(dirname "$0")/../corpus/qcow2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
python3 -c "
import os
d = bytearray(131072)
for i in range(4096): d[i] = (i * 7) & 255
d[8192:12288] = b'seed' * 1024
d[65536:65536 + 2048] = os.urandom(2048)
open('p.raw', 'wb').write(d)"
qemu-img convert -O qcow2 -o compat=0.10,cluster_size=512 p.raw v2-512.qcow2
qemu-img convert -O qcow2 -o cluster_size=4k p.raw v3-4k.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=4k,compression_type=zlib p.raw zlib-4k.qcow2
qemu-img convert -c -O qcow2 -o cluster_size=512,compression_type=zstd p.raw zstd-512.qcow2
qemu-img convert -O qcow2 -o cluster_size=4k p.raw zero-4k.qcow2
qemu-io -f qcow2 -c "write -z 0 8k" -c "write -z -u 8k 4k" zero-4k.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=16k,extended_l2=on xl2-16k.qcow2 64k
qemu-io -f qcow2 -c "write -P 5 512 1024" -c "write -z 2048 1024" -c "write -P 3 6000 700" xl2-16k.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4k -b v3-4k.qcow2 -F qcow2 backed-4k.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on empty-4k.qcow2 1M
cp ./*.qcow2 "$out/"
