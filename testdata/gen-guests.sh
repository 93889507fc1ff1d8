#!/bin/bash
# Builds small guest-shaped disk images for `v2x inspect` golden tests,
# without root and without mounting: filesystems are made with `mkfs -d`
# or mtools and placed into partitioned image files made by sfdisk.
#
#   mbr-ext4.img      MBR, sda1 ext4 root of a Debian 12-like tree,
#                     fstab and grub on /dev/sda1, BIOS grub
#   gpt-esp-ext4.img  GPT: sda1 ESP (FAT32, 40 MiB, EFI/debian), sda2 ext4 root,
#                     fstab by UUID with /boot/efi, UEFI grub
#   multi-sda.img     two disks of one guest: sda1 ext4 root without /var,
#   multi-sdb.img     sdb1 ext4 /var (dpkg's status lives there); fstab and
#                     grub on /dev/sda1 and /dev/sdb1, BIOS grub
#
# Everything is deterministic: fixed UUIDs, serials and timestamps.
# Usage: gen-guests.sh OUTDIR
set -euo pipefail
out=${1:?usage: gen-guests.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
work=$(mktemp -d "$out/work.XXXXXX")
trap 'rm -rf "$work"' EXIT
export E2FSPROGS_FAKE_TIME=1700000000 SOURCE_DATE_EPOCH=1700000000
export MTOOLS_SKIP_CHECK=1

KVER=6.1.0-18-amd64

# A Debian 12-like root tree in $1. $2 = bios|uefi, $3 = fstab text.
debian_tree() {
    local r=$1 fw=$2 fstab=$3
    mkdir -p "$r"/{etc/network,etc/default,usr/bin,usr/lib,usr/sbin,var/lib/dpkg,boot/grub,root,tmp}
    ln -s usr/bin "$r/bin"
    ln -s usr/lib "$r/lib"
    ln -s usr/sbin "$r/sbin"
    cp /bin/dash "$r/usr/bin/dash"
    ln -s dash "$r/usr/bin/sh"
    cat > "$r/usr/lib/os-release" <<'OS'
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
OS
    ln -s ../usr/lib/os-release "$r/etc/os-release"
    echo "12.5" > "$r/etc/debian_version"
    echo "$4" > "$r/etc/hostname"
    printf '%s\n' "$fstab" > "$r/etc/fstab"
    cat > "$r/etc/network/interfaces" <<'NET'
auto lo
iface lo inet loopback

allow-hotplug ens192
iface ens192 inet dhcp
NET
    cat > "$r/etc/default/grub" <<'GRUB'
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX=""
GRUB
    # Kernel, modules and a real initramfs (gzip'd newc cpio) without virtio.
    printf 'not a real kernel\n' > "$r/boot/vmlinuz-$KVER"
    local m="$r/usr/lib/modules/$KVER"
    mkdir -p "$m/kernel/drivers/block" "$m/kernel/drivers/virtio" "$m/kernel/drivers/scsi"
    printf 'fake module\n' > "$m/kernel/drivers/block/virtio_blk.ko"
    printf 'fake module\n' > "$m/kernel/drivers/virtio/virtio_pci.ko"
    printf 'fake module\n' > "$m/kernel/drivers/scsi/vmw_pvscsi.ko"
    cat > "$m/modules.dep" <<DEP
kernel/drivers/block/virtio_blk.ko:
kernel/drivers/virtio/virtio_pci.ko:
kernel/drivers/scsi/vmw_pvscsi.ko:
DEP
    printf 'kernel/fs/ext4/ext4.ko\n' > "$m/modules.builtin"
    local ird="$work/initrd.$$"
    rm -rf "$ird"; mkdir -p "$ird/usr/lib/modules/$KVER/kernel/drivers/scsi" "$ird/scripts"
    ln -s usr/lib "$ird/lib"
    cp "$m/kernel/drivers/scsi/vmw_pvscsi.ko" "$ird/usr/lib/modules/$KVER/kernel/drivers/scsi/"
    printf '#!/bin/sh\n' > "$ird/init"
    (cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --reproducible --quiet | gzip -n -9) > "$r/boot/initrd.img-$KVER"
    rm -rf "$ird"
    ln -s "boot/vmlinuz-$KVER" "$r/vmlinuz"
    ln -s "boot/initrd.img-$KVER" "$r/initrd.img"
    local rootdev=$5
    cat > "$r/boot/grub/grub.cfg" <<CFG
set default="0"
menuentry 'Debian GNU/Linux' --class debian {
	insmod ext2
	linux	/boot/vmlinuz-$KVER root=$rootdev ro quiet
	initrd	/boot/initrd.img-$KVER
}
menuentry 'Debian GNU/Linux, with Linux $KVER (recovery mode)' {
	linux	/boot/vmlinuz-$KVER root=$rootdev ro single
	initrd	/boot/initrd.img-$KVER
}
CFG
    if [ "$fw" = bios ]; then
        mkdir -p "$r/boot/grub/i386-pc"; printf 'x' > "$r/boot/grub/i386-pc/core.img"
        grubpkg=grub-pc
    else
        mkdir -p "$r/boot/grub/x86_64-efi" "$r/boot/efi"; printf 'x' > "$r/boot/grub/x86_64-efi/core.efi"
        grubpkg=grub-efi-amd64
    fi
    mkdir -p "$r/etc/systemd/system/multi-user.target.wants" "$r/usr/lib/systemd/system"
    printf '[Unit]\nDescription=Service for virtual machines hosted on VMware\n' > "$r/usr/lib/systemd/system/open-vm-tools.service"
    ln -s /usr/lib/systemd/system/open-vm-tools.service "$r/etc/systemd/system/multi-user.target.wants/open-vm-tools.service"
    printf 'x' > "$r/usr/bin/vmtoolsd"
    {
        for p in "base-files 12.4+deb12u5" "$grubpkg 2.06-13+deb12u1" "linux-image-$KVER 6.1.76-1" \
                 "open-vm-tools 2:12.2.0-1+deb12u2" "initramfs-tools 0.142"; do
            set -- $p
            printf 'Package: %s\nStatus: install ok installed\nArchitecture: amd64\nVersion: %s\n\n' "$1" "$2"
        done
    } > "$r/var/lib/dpkg/status"
}

# Places partition image $2 at byte offset $3 of disk image $1.
place() { dd if="$2" of="$1" bs=1M seek=$(( $3 / 1048576 )) conv=notrunc,sparse status=none; }

# An MBR disk image $1 of size $2 holding one ext4 partition at 1 MiB:
# label-id $3, $4 sectors long, partition flags $5 (", bootable" or ""),
# filesystem label $6, UUID $7 and hash seed $8, made from tree $9, ${10} big.
mbr_ext4_disk() {
    local img=$1 fs
    fs=$work/$(basename "$1").ext4
    rm -f "$img"; truncate -s "$2" "$img"
    printf 'label: dos\nlabel-id: %s\nstart=2048, size=%s, type=83%s\n' "$3" "$4" "$5" | sfdisk -q "$img"
    mkfs.ext4 -q -F -L "$6" -U "$7" -E hash_seed="$8" -d "$9" "$fs" "${10}"
    place "$img" "$fs" $((2048 * 512))
}

# --- MBR + ext4 -----------------------------------------------------------
r=$work/mbr-root
debian_tree "$r" bios "/dev/sda1 / ext4 errors=remount-ro 0 1
proc /proc proc defaults 0 0" mbr-guest /dev/sda1
mbr_ext4_disk "$out/mbr-ext4.img" 64M 0x5eed0001 120832 ", bootable" rootfs \
    3f0e2b1a-7c55-4d2e-9a61-0c1d2e3f4a5b 1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9 "$r" 59M

# --- GPT + ESP + ext4 -------------------------------------------------------
ROOT_UUID=8c1f5e2d-4b3a-4f6e-9d8c-7b6a5f4e3d2c
r=$work/gpt-root
debian_tree "$r" uefi "UUID=$ROOT_UUID / ext4 errors=remount-ro 0 1
UUID=1234-ABCD /boot/efi vfat umask=0077 0 1" gpt-guest "UUID=$ROOT_UUID"
img=$out/gpt-esp-ext4.img
rm -f "$img"; truncate -s 112M "$img"
sfdisk -q "$img" <<'GPT'
label: gpt
label-id: 6D2C4B1A-0E9F-4A8B-B7C6-D5E4F3A2B1C0
start=2048, size=81920, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=0F1E2D3C-4B5A-4968-8776-A5B4C3D2E1F0, name="EFI System Partition"
start=83968, size=143360, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=A1B2C3D4-E5F6-4789-8ABC-DEF012345678, name="root"
GPT
esp=$work/esp.fat
rm -f "$esp"; truncate -s 40M "$esp"
mkfs.vfat -F 32 -s 1 -i 1234ABCD -n ESP "$esp" >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/debian
printf 'MZ fake shim\n' > "$work/shimx64.efi"
printf 'MZ fake grub\n' > "$work/grubx64.efi"
printf "search.fs_uuid $ROOT_UUID root\nset prefix=(\$root)'/boot/grub'\nconfigfile \$prefix/grub.cfg\n" > "$work/grub.cfg"
mcopy -i "$esp" "$work/shimx64.efi" "$work/grubx64.efi" "$work/grub.cfg" ::/EFI/debian/
place "$img" "$esp" $((2048 * 512))
mkfs.ext4 -q -F -U $ROOT_UUID -E hash_seed=2b3c4d5e-6f70-4819-9a3b-b5c6d7e8f9a0 -d "$r" "$work/p2.ext4" 70M
place "$img" "$work/p2.ext4" $((83968 * 512))

# --- Two disks: root on sda1, /var on sdb1 ---------------------------------
r=$work/multi-root
debian_tree "$r" bios "/dev/sda1 / ext4 errors=remount-ro 0 1
/dev/sdb1 /var ext4 defaults 0 2
proc /proc proc defaults 0 0" multi-guest /dev/sda1
mv "$r/var" "$work/multi-var"
mkdir "$r/var"
mbr_ext4_disk "$out/multi-sda.img" 64M 0x5eed0002 120832 ", bootable" root \
    4a1b2c3d-5e6f-4a7b-8c9d-0e1f2a3b4c5d 3c4d5e6f-7081-492a-8b4c-c6d7e8f9a0b1 "$r" 59M
mbr_ext4_disk "$out/multi-sdb.img" 40M 0x5eed0003 79872 "" var \
    5b2c3d4e-6f70-4b8c-9dae-1f2a3b4c5d6e 4d5e6f70-8192-4a3b-9c5d-d7e8f9a0b1c2 "$work/multi-var" 39M

ls -l "$out"/*.img
