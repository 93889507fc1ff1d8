#!/bin/bash
# Boots a guest disk under QEMU (TCG, no KVM) and waits for the guest's
# "V2X-BOOT-OK" line on the serial console (see gen-debian-guest.sh).
#
# Usage: boot-test.sh IMAGE FORMAT BUS [TIMEOUT]
#   FORMAT   a qemu block format: raw, vmdk, qcow2, ...
#   BUS      virtio (virtio-blk-pci) or sata (AHCI controller + ide-hd)
#   TIMEOUT  seconds, default 900
# Exits 0 when the marker appears; 1 on timeout, when the initramfs gives up
# on the root device, or when QEMU exits without the marker (the last 30
# lines of the console are printed). 2 on a usage error.
# The image is opened with -snapshot: a boot never modifies it. The console
# log is kept in $V2X_BOOT_LOG if set (else a temporary file, removed).
set -euo pipefail

usage() { echo "usage: boot-test.sh IMAGE FORMAT BUS(virtio|sata) [TIMEOUT]" >&2; exit 2; }
[ $# -ge 3 ] && [ $# -le 4 ] || usage
image=$1 format=$2 bus=$3 timeout=${4:-900}
[ -f "$image" ] || { echo "boot-test: no image $image" >&2; exit 2; }
case $timeout in '' | *[!0-9]*) usage ;; esac
command -v qemu-system-x86_64 >/dev/null || {
    echo "boot-test: qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2
    exit 1
}

marker='V2X-BOOT-OK'
gave_up='Gave up waiting for root file system device'
case $bus in
virtio) disk=(-device virtio-blk-pci,drive=disk0,bootindex=0) ;;
sata) disk=(-device ahci,id=ahci0 -device ide-hd,drive=disk0,bus=ahci0.0,bootindex=0) ;;
*) usage ;;
esac

log=${V2X_BOOT_LOG:-}
if [ -z "$log" ]; then
    log=$(mktemp --tmpdir v2x-boot.XXXXXX.log)
    trap 'rm -f "$log"' EXIT
fi
: > "$log"

qemu-system-x86_64 -accel tcg -machine q35 -m 1024 -nographic \
    -monitor none -serial "file:$log" -snapshot \
    -drive "file=$image,format=$format,if=none,id=disk0" "${disk[@]}" \
    -nic user,model=virtio-net-pci &
qemu=$!

start=$(date +%s)
result=timeout
while :; do
    if grep -qa "$marker" "$log"; then result=ok; break; fi
    if grep -qa "$gave_up" "$log"; then result=gave-up; break; fi
    if ! kill -0 "$qemu" 2>/dev/null; then
        # QEMU may exit (guest poweroff) right after the marker is written.
        grep -qa "$marker" "$log" && result=ok || result=qemu-exited
        break
    fi
    [ $(($(date +%s) - start)) -lt "$timeout" ] || break
    sleep 1
done
elapsed=$(($(date +%s) - start))
if kill -0 "$qemu" 2>/dev/null; then
    # After the marker the guest powers off by itself; give it a moment.
    [ $result = ok ] && for _ in $(seq 30); do kill -0 "$qemu" 2>/dev/null || break; sleep 1; done
    kill "$qemu" 2>/dev/null || true
fi
wait "$qemu" 2>/dev/null || true

if [ $result = ok ]; then
    echo "boot-test: $image ($format, $bus): $(grep -a -m1 -o "$marker.*" "$log" | tr -d '\r') after ${elapsed}s"
    exit 0
fi
echo "boot-test: $image ($format, $bus): FAILED ($result) after ${elapsed}s; last 30 console lines:" >&2
tail -n 30 "$log" | tr -d '\r' >&2
exit 1
