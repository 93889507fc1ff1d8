#!/bin/bash
# Times v2x and virt-v2v converting the same guest disk, in the same run,
# on the same machine: wall time and peak RSS of each, and the ratio.
#
# Usage: compare-virt-v2v.sh GUEST.vmdk [OUTDIR]
# Needs: the v2x release binary (cargo build --release), virt-v2v with
# nbdkit and libnbd-bin, a host kernel for libguestfs's appliance (Debian:
# apt-get install virt-v2v nbdkit libnbd-bin linux-image-amd64) and GNU time. virt-v2v runs its libguestfs appliance under TCG here
# (LIBGUESTFS_BACKEND=direct, force_tcg), as on any machine without KVM.
# With V2X_COMPARE_BOOT=1 both outputs are also boot-tested on virtio.
set -euo pipefail
src=${1:?usage: compare-virt-v2v.sh GUEST.vmdk [OUTDIR]}
out=${2:-$(mktemp -d --tmpdir v2x-vs-v2v.XXXXXX)}
here=$(cd "$(dirname "$0")" && pwd)
v2x=${V2X:-$here/../target/release/v2x}
mkdir -p "$out"
for t in virt-v2v /usr/bin/time "$v2x"; do
    command -v "$t" >/dev/null || { echo "missing $t" >&2; exit 2; }
done

# run NAME CMD...: prints "NAME wall_s rss_kib" from GNU time.
run() {
    local name=$1; shift
    /usr/bin/time -f "%e %M" -o "$out/$name.time" "$@" >"$out/$name.log" 2>&1 || {
        echo "$name failed; see $out/$name.log" >&2; tail -20 "$out/$name.log" >&2; return 1; }
    read -r wall rss <"$out/$name.time"
    printf '%-9s wall %8.2f s   peak RSS %8.1f MiB\n' "$name" "$wall" "$(echo "$rss / 1024" | bc -l)"
}

rm -rf "$out/v2x.qcow2" "$out/v2v"
mkdir -p "$out/v2v"
sync
run v2x "$v2x" convert -q "$src" "$out/v2x.qcow2"
run virt-v2v env LIBGUESTFS_BACKEND=direct LIBGUESTFS_BACKEND_SETTINGS=force_tcg \
    virt-v2v -i disk "$src" -o local -of qcow2 -os "$out/v2v"
read -r v2x_wall _ <"$out/v2x.time"
read -r v2v_wall _ <"$out/virt-v2v.time"
echo "ratio: virt-v2v / v2x wall time = $(echo "scale=1; $v2v_wall / $v2x_wall" | bc -l)x"

if [ "${V2X_COMPARE_BOOT:-0}" = 1 ]; then
    bash "$here/boot-test.sh" "$out/v2x.qcow2" qcow2 virtio 900 || true
    v2v_disk=$(ls "$out"/v2v/*-sda | head -n1)
    bash "$here/boot-test.sh" "$v2v_disk" qcow2 virtio 900 || true
fi
