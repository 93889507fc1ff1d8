#!/usr/bin/env bash
# Measures v2x against `qemu-img convert -m 16 -W` on the same input, in the
# same run, and prints the throughput ratios. Not a test: numbers only.
# Usage: testdata/bench.sh [WORKDIR]   (needs ~8 GiB free; V2X=path to override the binary)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-$(mktemp -d /var/tmp/v2x-bench.XXXXXX)}
mkdir -p "$work"
v2x=${V2X:-$here/../target/release/v2x}
if [ ! -x "$v2x" ]; then (cd "$here/.." && cargo build --release --quiet); fi
command -v /usr/bin/time >/dev/null || { echo "bench needs /usr/bin/time (apt-get install time)" >&2; exit 1; }

src_raw=$work/bench.raw
src_qcow2=$work/bench.qcow2
if [ ! -f "$src_raw" ]; then
  echo "generating 4 GiB virtual / 1.5 GiB data disk in $work ..."
  python3 "$here/gen-bench.py" "$src_raw"
fi
[ -f "$src_qcow2" ] || qemu-img convert -f raw -O qcow2 "$src_raw" "$src_qcow2"
mk() { [ -f "$work/$1" ] || qemu-img convert -f raw -O "$2" -o "$3" "$src_raw" "$work/$1"; }
mk bench-sparse.vmdk vmdk subformat=monolithicSparse
mk bench-stream.vmdk vmdk subformat=streamOptimized
mk bench-dynamic.vhd vpc subformat=dynamic,force_size=on
mk bench.vhdx vhdx subformat=dynamic
echo "qemu-img: $(qemu-img --version | head -1)"
echo "cpus: $(nproc)"


# best SECONDS of N runs, with the peak RSS of the last.
best() {
  local n=$1 out=$2; shift 2
  local best=999999 rss=0
  for _ in $(seq "$n"); do
    rm -f "$out"
    # Flush the previous run's dirty pages so it does not slow this one.
    sync
    # Cold cases: drop the source's pages from the page cache (no root needed).
    if [ -n "${cold_src:-}" ]; then
      python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$cold_src"
    fi
    local t0 t1
    t0=$(date +%s.%N)
    rss=$( { /usr/bin/time -f '%M' "$@" >/dev/null; } 2>&1 | tail -1 )
    t1=$(date +%s.%N)
    local s; s=$(echo "$t1 - $t0" | bc -l)
    if (( $(echo "$s < $best" | bc -l) )); then best=$s; fi
    rm -f "$out"
  done
  echo "$best $rss"
}

data_mib=1536
printf '%-26s %9s %9s %8s %11s %11s\n' case v2x_s qemu_s ratio v2x_rss_MiB qemu_rss_MiB
bench_case() {
  local name=$1 n=$2 src=$3; shift 3
  local out=$work/out.qcow2
  local v q
  v=$(best "$n" "$out" "$v2x" convert -q --force "$@" "$src" "$out")
  local qargs=()
  for a in "$@"; do
    case $a in
      --compress=zlib) qargs+=(-c -o compression_type=zlib) ;;
      --compress=zstd) qargs+=(-c -o compression_type=zstd) ;;
    esac
  done
  q=$(best "$n" "$out" qemu-img convert -m 16 -W -O qcow2 "${qargs[@]}" "$src" "$out")
  local vs=${v% *} vr=${v#* } qs=${q% *} qr=${q#* }
  printf '%-26s %9.2f %9.2f %7.2fx %11d %11d   (%.0f vs %.0f MiB/s of data)\n' "$name" "$vs" "$qs" \
    "$(echo "$qs / $vs" | bc -l)" $((vr / 1024)) $((qr / 1024)) \
    "$(echo "$data_mib / $vs" | bc -l)" "$(echo "$data_mib / $qs" | bc -l)"
}
# Warm the page cache so both tools read from memory.
cat "$src_raw" "$src_qcow2" "$work"/bench-* "$work/bench.vhdx" >/dev/null
bench_case "raw -> qcow2" 3 "$src_raw"
bench_case "qcow2 -> qcow2" 3 "$src_qcow2"
bench_case "vmdk sparse -> qcow2" 2 "$work/bench-sparse.vmdk"
bench_case "vmdk stream -> qcow2" 1 "$work/bench-stream.vmdk"
bench_case "vhd dynamic -> qcow2" 2 "$work/bench-dynamic.vhd"
bench_case "vhdx -> qcow2" 2 "$work/bench.vhdx"
bench_case "raw -> qcow2 zstd" 1 "$src_raw" --compress=zstd
bench_case "raw -> qcow2 zlib" 1 "$src_raw" --compress=zlib
# Sources not in the page cache, as in a real migration: disk-bound.
for c in "raw:$src_raw" "qcow2:$src_qcow2" "vhdx:$work/bench.vhdx"; do
  cold_src=${c#*:} bench_case "${c%%:*} -> qcow2 (cold)" 2 "${c#*:}"
done
echo "ratio = qemu-img seconds / v2x seconds (higher is better for v2x)"
