#!/bin/bash
# Builds a real, bootable Debian 12 (bookworm) amd64 guest disk that looks
# like it came from VMware: MBR, ext4 root on /dev/sda1 (from 1 MiB), GRUB in
# the MBR + post-MBR gap, an initramfs with VMware/SATA storage drivers only
# (no virtio), open-vm-tools, and a unit that prints "V2X-BOOT-OK <hostname>"
# on ttyS0 and powers off. See testdata/debian-guest/README.md.
#
# Usage (as root, network to the Debian mirror): gen-debian-guest.sh OUTDIR
# Writes OUTDIR/guest.raw (3 GiB, sparse), guest-sparse.vmdk
# (monolithicSparse), guest-stream.vmdk (streamOptimized) and guest-info.txt.
# The image is made without mounting it: mkfs.ext4 -d fills the partition
# region of the raw file, and GRUB's boot.img/core.img are written with dd.
# Only /proc is mounted, inside the build chroot, while packages install.
#
# The finished root tree is cached under ${V2X_CACHE:-$HOME/.cache/v2x},
# keyed by the hash of this script and of testdata/debian-guest/, so reruns
# only rebuild the image (about a minute).
set -euo pipefail

out=${1:?usage: gen-debian-guest.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
overlay=$here/debian-guest/rootfs
cache=${V2X_CACHE:-$HOME/.cache/v2x}/debian-guest
suite=bookworm
mirror=${V2X_DEBIAN_MIRROR:-http://deb.debian.org/debian}
hostname=vmguest
disk_size=$((3 * 1024 * 1024 * 1024))
part_start=2048                          # sectors: the partition starts at 1 MiB
root_uuid=5a2c0e61-7d0b-4c52-9d4e-2f1b0c3a9e11
disk_id=0x5a2c0e61
# Packages on top of minbase (zstd: the initramfs is zstd-compressed, as on
# a standard bookworm install). ifupdown is not used: systemd-networkd has the
# interface config (see 20-vmnic.network).
packages=(linux-image-amd64 grub-pc systemd-sysv udev kmod zstd open-vm-tools)

t0=$(date +%s)
step() { echo "[gen-debian-guest $(($(date +%s) - t0))s] $*"; }

[ "$(id -u)" = 0 ] || { echo "gen-debian-guest.sh must run as root" >&2; exit 1; }

need=()
for tool in debootstrap:debootstrap mkfs.ext4:e2fsprogs sfdisk:fdisk qemu-img:qemu-utils; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

mkdir -p "$cache" "$out"
key=$( (cat "$0"; cd "$here/debian-guest" && find rootfs -type f | LC_ALL=C sort |
    while read -r f; do echo "$f"; cat "$f"; done) | sha256sum | cut -c1-16)
root=$cache/root-$key

# Stage 1: minbase debootstrap, cached by its arguments.
boot_args=(--variant=minbase --arch=amd64 "$suite")
minbase=$cache/minbase-$(echo "${boot_args[*]} $mirror" | sha256sum | cut -c1-16).tar
if [ ! -f "$minbase" ]; then
    step "debootstrap ${boot_args[*]} $mirror"
    tmp=$(mktemp -d "$cache/debootstrap.XXXXXX")
    debootstrap "${boot_args[@]}" "$tmp" "$mirror"
    tar --numeric-owner --xattrs -C "$tmp" -cf "$minbase.new" .
    rm -rf --one-file-system "$tmp"
    mv "$minbase.new" "$minbase"
    step "debootstrap done"
fi

# Stage 2: packages and configuration in a chroot, cached by the script hash.
in_root() {
    chroot "$build" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
        DEBIAN_FRONTEND=noninteractive "$@"
}
apt_install() {
    in_root apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
cleanup() {
    if [ -n "${build:-}" ] && mountpoint -q "$build/proc"; then umount "$build/proc"; fi
}
trap cleanup EXIT

if [ ! -f "$root.done" ]; then
    rm -rf --one-file-system "$root"
    build=$cache/build-$key
    if [ -d "$build" ]; then
        mountpoint -q "$build/proc" && umount "$build/proc"
        rm -rf --one-file-system "$build"
    fi
    mkdir -p "$build"
    tar --numeric-owner --xattrs -C "$build" -xf "$minbase"
    mount -t proc proc "$build/proc"
    cp /etc/resolv.conf "$build/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' > "$build/usr/sbin/policy-rc.d"
    chmod 755 "$build/usr/sbin/policy-rc.d"
    cp -r --preserve=mode "$overlay/." "$build/"

    step "installing initramfs-tools"
    in_root apt-get update -q
    apt_install initramfs-tools
    # Only the listed modules (etc/initramfs-tools/modules), as on a guest
    # whose initramfs was built for its own hardware.
    sed -i 's/^MODULES=.*/MODULES=list/' "$build/etc/initramfs-tools/initramfs.conf"
    grep -qx 'MODULES=list' "$build/etc/initramfs-tools/initramfs.conf"

    step "installing ${packages[*]}"
    apt_install "${packages[@]}"
    in_root systemctl enable systemd-networkd.service v2x-boot-marker.service
    # What the installer would have recorded after grub-install /dev/sda.
    echo 'grub-pc grub-pc/install_devices multiselect /dev/sda' | in_root debconf-set-selections

    # GRUB's files in /boot/grub, as grub-install leaves them.
    mkdir -p "$build/boot/grub/i386-pc"
    cp "$build"/usr/lib/grub/i386-pc/*.mod "$build"/usr/lib/grub/i386-pc/*.lst \
        "$build/boot/grub/i386-pc/"
    in_root grub-editenv /boot/grub/grubenv create
    kver=$(cd "$build/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n1)
    # What update-grub makes of etc/default/grub, without the device probing
    # that cannot work in a chroot.
    cat > "$build/boot/grub/grub.cfg" <<EOF
# Written by testdata/gen-debian-guest.sh to match /etc/default/grub
# (GRUB_DISABLE_LINUX_UUID=true, GRUB_CMDLINE_LINUX="console=ttyS0").
set default=0
set timeout=1
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
insmod part_msdos
insmod ext2
set root='hd0,msdos1'
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os {
	insmod gzio
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	echo	'Loading Linux $kver ...'
	linux	/boot/vmlinuz-$kver root=/dev/sda1 ro console=ttyS0
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-$kver
}
EOF
    # core.img for the post-MBR gap: finds its modules and grub.cfg on
    # partition 1 by the fixed prefix.
    in_root grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img \
        -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2
    cp "$build/usr/lib/grub/i386-pc/boot.img" "$build/boot/grub/i386-pc/boot.img"

    rm -f "$build/usr/sbin/policy-rc.d"
    in_root apt-get clean
    rm -rf "$build"/var/lib/apt/lists/* "$build"/var/cache/apt/*.bin \
        "$build"/var/log/*.log "$build"/var/log/apt/* "$build"/tmp/* "$build"/var/tmp/*
    : > "$build/etc/resolv.conf"
    : > "$build/etc/machine-id"
    umount "$build/proc"
    mv "$build" "$root"
    echo "$kver" > "$root.done"
    # Root trees of older versions of this script (about 700 MB each).
    for old in "$cache"/root-*; do
        case $old in "$root" | "$root.done") ;; *) rm -rf --one-file-system "$old" ;; esac
    done
    rm -f "$cache"/initrd-*.txt
    step "root tree ready"
fi
kver=$(cat "$root.done")

# The storage check: the initramfs must not be able to find a virtio disk.
# lsinitramfs is the guest's own (initramfs-tools), run in the root tree.
initrd=/boot/initrd.img-$kver
chroot "$root" lsinitramfs "$initrd" > "$cache/initrd-$key.txt"
if grep -E '/virtio[^/]*\.ko' "$cache/initrd-$key.txt"; then
    echo "initramfs $initrd contains virtio modules" >&2
    exit 1
fi
grep -q '/ahci\.ko' "$cache/initrd-$key.txt" || { echo "no ahci in $initrd" >&2; exit 1; }

# Stage 3: the disk, without mounting it.
step "making guest.raw"
cd "$out"
rm -f guest.raw guest-sparse.vmdk guest-stream.vmdk guest-info.txt
truncate -s "$disk_size" guest.raw
sfdisk -q guest.raw <<EOF
label: dos
label-id: $disk_id
start=$part_start, type=83, bootable
EOF
part_bytes=$((disk_size - part_start * 512))
mkfs.ext4 -q -F -L root -U "$root_uuid" -E "offset=$((part_start * 512)),nodiscard" \
    -d "$root" guest.raw "$((part_bytes / 1024))k"

# GRUB: boot.img's code into the MBR (keeping the disk id and the partition
# table from byte 440 on), with the LBA of core.img (sector 1) at 0x5c;
# core.img into sectors 1.. of the gap. core.img's first sector (diskboot)
# loads the rest from the blocklist at its end: start LBA 2, count = size-1.
core=$root/boot/grub/i386-pc/core.img
core_sectors=$(( ($(stat -c %s "$core") + 511) / 512 ))
[ "$core_sectors" -lt "$part_start" ] || { echo "core.img too big" >&2; exit 1; }
le64() { printf "$(printf '\\x%02x' $(( $1 & 255 )) $(( ($1 >> 8) & 255 )) 0 0 0 0 0 0)"; }
le16() { printf "$(printf '\\x%02x' $(( $1 & 255 )) $(( ($1 >> 8) & 255 )))"; }
dd if="$root/boot/grub/i386-pc/boot.img" of=guest.raw bs=440 count=1 conv=notrunc status=none
le64 1 | dd of=guest.raw bs=1 seek=$((0x5c)) conv=notrunc status=none
dd if="$core" of=guest.raw bs=512 seek=1 conv=notrunc status=none
le64 2 | dd of=guest.raw bs=1 seek=$((512 + 500)) conv=notrunc status=none
le16 $((core_sectors - 1)) | dd of=guest.raw bs=1 seek=$((512 + 508)) conv=notrunc status=none

# The reference checks: e2fsck on the partition, the MBR as sfdisk reads it.
e2fsck -fn "guest.raw?offset=$((part_start * 512))" >/dev/null
sfdisk -d guest.raw | grep -q "guest.raw1 : start= *$part_start, .*type=83, bootable"
step "converting to VMDK"
qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse guest.raw guest-sparse.vmdk
qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized guest.raw guest-stream.vmdk

{
    echo "kernel $kver"
    echo "root_uuid $root_uuid"
    echo "disk_id $disk_id"
    echo "hostname $hostname"
    echo "core_sectors $core_sectors"
} > guest-info.txt
ls -ls guest.raw guest-sparse.vmdk guest-stream.vmdk
step "done"
