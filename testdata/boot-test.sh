#!/bin/bash
# Boots a guest disk under QEMU (TCG, no KVM) and waits for the guest's
# "V2X-BOOT-OK" line on the serial console (see gen-debian-guest.sh).
#
# Usage: boot-test.sh IMAGE FORMAT BUS [TIMEOUT]
#        boot-test.sh --script SCRIPT [TIMEOUT]
#   FORMAT   a qemu block format: raw, vmdk, qcow2, ...
#   BUS      virtio (virtio-blk-pci) or sata (AHCI controller + ide-hd)
#   TIMEOUT  seconds, default 900
#   SCRIPT   a `v2x convert --target qemu` script: it is run as it is, with
#            V2X_QEMU_ACCEL=tcg, V2X_QEMU_SERIAL=file:LOG and the extra
#            arguments -snapshot -display none (and the pcap filter below on
#            its NIC, netdev id net0), so the script's own machine, disks,
#            firmware and NICs are what boots.
# Exits 0 when the marker appears; 1 on timeout, when the initramfs gives up
# on the root device (initramfs-tools or dracut), when the UEFI firmware finds
# nothing to boot, or when QEMU exits without the marker (the last 30 lines of
# the console are printed). 2 on a usage error.
# The image is opened with -snapshot: a boot never modifies it. The console
# log is kept in $V2X_BOOT_LOG if set (else a temporary file, removed).
#
# Firmware: V2X_BOOT_FIRMWARE=bios (default, SeaBIOS) or uefi (OVMF from the
# ovmf package: OVMF_CODE_4M.fd read-only plus a fresh copy of OVMF_VARS_4M.fd
# for each boot, i.e. empty NVRAM with no boot entries, so only the removable
# media path \EFI\BOOT\BOOTX64.EFI can boot). V2X_OVMF_CODE and V2X_OVMF_VARS
# override the two files (they must be a matching pair).
#
# The guest has one virtio-net NIC on QEMU's user network (which answers
# DHCP). With V2X_BOOT_PCAP=FILE its traffic is written to FILE (pcap), so a
# caller can check that the guest's own network configuration brought the NIC
# up (a DHCP request from the guest).
set -euo pipefail

usage() {
    echo "usage: boot-test.sh IMAGE FORMAT BUS(virtio|sata) [TIMEOUT] | --script SCRIPT [TIMEOUT]" >&2
    exit 2
}
script=
if [ "${1:-}" = --script ]; then
    [ $# -ge 2 ] && [ $# -le 3 ] || usage
    script=$2 image=$2 format=script bus=script timeout=${3:-900}
    [ -x "$script" ] || { echo "boot-test: $script is not an executable script" >&2; exit 2; }
else
    [ $# -ge 3 ] && [ $# -le 4 ] || usage
    image=$1 format=$2 bus=$3 timeout=${4:-900}
    [ -f "$image" ] || { echo "boot-test: no image $image" >&2; exit 2; }
fi
case $timeout in '' | *[!0-9]*) usage ;; esac
command -v qemu-system-x86_64 >/dev/null || {
    echo "boot-test: qemu-system-x86_64 missing (apt-get install qemu-system-x86)" >&2
    exit 1
}

marker='V2X-BOOT-OK'
# Console lines that mean the boot has failed for good, each with the name the
# result is reported under:
# - initramfs-tools, after waiting rootdelay (180 s) for the root device;
# - dracut (systemd in the initramfs): its initqueue waits for the root device
#   (and rd.lvm.lv LVs) and, when that wait runs out (about 200 s after start
#   under TCG), prints "Warning: dracut-initqueue: timeout, still waiting for
#   following initqueue hooks:" once a second, about 120 times, before
#   "Warning: Could not boot.", 'Warning: "/dev/mapper/vmvg-root" does not
#   exist' and the emergency shell. The first timeout line is taken as the
#   failure (the rest only repeats it); the later lines are matched too, and
#   so is systemd's emergency mode (a failed mount after the switch to root);
# - OVMF when no boot option worked: with an empty NVRAM its only options are
#   the disks' removable-media paths (\EFI\BOOT\BOOTX64.EFI) and, in the
#   ovmf package's build, its built-in UEFI Shell, which it then starts ("UEFI
#   Interactive Shell"); a build without the shell says "No bootable option".
failures=(
    'gave-up:Gave up waiting for root file system device'
    'dracut-timeout:Warning: dracut-initqueue: timeout, still waiting for following initqueue hooks'
    'dracut-gave-up:Warning: Could not boot\.'
    'emergency:Entering emergency mode'
    'uefi-shell:UEFI Interactive Shell'
    'no-boot-option:BdsDxe: No bootable option or device was found'
)
firmware=${V2X_BOOT_FIRMWARE:-bios}
case $firmware in bios | uefi) ;; *)
    echo "boot-test: V2X_BOOT_FIRMWARE must be bios or uefi, not $firmware" >&2
    exit 2
    ;;
esac
case $bus in
script) disk=() ;;
virtio) disk=(-device virtio-blk-pci,drive=disk0,bootindex=0) ;;
sata) disk=(-device ahci,id=ahci0 -device ide-hd,drive=disk0,bus=ahci0.0,bootindex=0) ;;
*) usage ;;
esac

temps=()
trap 'rm -f "${temps[@]}"' EXIT
log=${V2X_BOOT_LOG:-}
if [ -z "$log" ]; then
    log=$(mktemp --tmpdir v2x-boot.XXXXXX.log)
    temps+=("$log")
fi
: > "$log"

nic=(-netdev user,id=net0 -device virtio-net-pci,netdev=net0)
if [ -n "${V2X_BOOT_PCAP:-}" ]; then
    nic+=(-object "filter-dump,id=dump0,netdev=net0,file=$V2X_BOOT_PCAP")
fi

fw=()
if [ "$firmware" = uefi ]; then
    code=${V2X_OVMF_CODE:-/usr/share/OVMF/OVMF_CODE_4M.fd}
    vars=${V2X_OVMF_VARS:-/usr/share/OVMF/OVMF_VARS_4M.fd}
    for f in "$code" "$vars"; do
        [ -f "$f" ] || { echo "boot-test: no OVMF file $f (apt-get install ovmf)" >&2; exit 1; }
    done
    # The variable store is written by the firmware: each boot gets its own
    # copy of the pristine one, so no boot entry survives from an earlier run.
    nvram=$(mktemp --tmpdir v2x-boot-vars.XXXXXX.fd)
    temps+=("$nvram")
    cp "$vars" "$nvram"
    fw=(-drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
        -drive "if=pflash,format=raw,unit=1,file=$nvram")
fi

if [ -n "$script" ]; then
    dump=()
    [ -z "${V2X_BOOT_PCAP:-}" ] || dump=(-object "filter-dump,id=dump0,netdev=net0,file=$V2X_BOOT_PCAP")
    [ "$firmware" = bios ] || echo "boot-test: with --script the script chooses the firmware" >&2
    # The script ends in `exec qemu-system-x86_64`, so $! is QEMU itself.
    V2X_QEMU_ACCEL=tcg V2X_QEMU_SERIAL="file:$log" "$script" -snapshot -display none "${dump[@]}" \
        </dev/null >/dev/null &
else
    qemu-system-x86_64 -accel tcg -machine q35 -m 1024 -nographic \
        -monitor none -serial "file:$log" -snapshot "${fw[@]}" \
        -drive "file=$image,format=$format,if=none,id=disk0" "${disk[@]}" \
        "${nic[@]}" &
fi
qemu=$!

start=$(date +%s)
result=timeout
while :; do
    if grep -qa "$marker" "$log"; then result=ok; break; fi
    for f in "${failures[@]}"; do
        if grep -qa -- "${f#*:}" "$log"; then result=${f%%:*}; break 2; fi
    done
    if ! kill -0 "$qemu" 2>/dev/null; then
        # QEMU may exit (guest poweroff) right after the marker is written.
        grep -qa "$marker" "$log" && result=ok || result=qemu-exited
        break
    fi
    [ $(($(date +%s) - start)) -lt "$timeout" ] || break
    sleep 1
done
elapsed=$(($(date +%s) - start))
what="$format, $bus"
[ -z "$script" ] || what="qemu script"
[ "$firmware" = bios ] || what+=", $firmware"
if kill -0 "$qemu" 2>/dev/null; then
    # After the marker the guest powers off by itself; give it a moment.
    [ $result = ok ] && for _ in $(seq 30); do kill -0 "$qemu" 2>/dev/null || break; sleep 1; done
    kill "$qemu" 2>/dev/null || true
fi
wait "$qemu" 2>/dev/null || true

if [ $result = ok ]; then
    echo "boot-test: $image ($what): $(grep -a -m1 -o "$marker.*" "$log" | tr -d '\r') after ${elapsed}s"
    exit 0
fi
echo "boot-test: $image ($what): FAILED ($result) after ${elapsed}s; last 30 console lines:" >&2
tail -n 30 "$log" | tr -d '\r' >&2
exit 1
