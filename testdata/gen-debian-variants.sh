#!/bin/bash
# Builds two more real, bootable Debian 12 (bookworm) amd64 "VMware" guests
# next to the one of gen-debian-guest.sh, for layouts a conversion must also
# handle. See testdata/debian-variants/README.md.
#
#   lvm   BIOS/MBR: sda1 = separate /boot (ext4, 512 MiB), sda2 = LVM PV of
#         VG vmvg whose LV root (ext4) is /; dracut initramfs without virtio.
#   uefi  GPT: sda1 = EFI System Partition (FAT32, 100 MiB) holding only
#         \EFI\debian\grubx64.efi (no \EFI\BOOT\BOOTX64.EFI), sda2 = ext4 root;
#         initramfs-tools initramfs without virtio.
#
# Usage (as root, network to the Debian mirror):
#   gen-debian-variants.sh OUTDIR [lvm|uefi ...]     (default: both)
# Writes OUTDIR/<variant>.raw (3 GiB, sparse), <variant>-sparse.vmdk
# (monolithicSparse), lvm-vg.txt (vgcfgbackup of the guest's VG) and
# variants-info.txt (kernel, UUIDs, offsets of the variants built).
#
# As in gen-debian-guest.sh, the disks are never mounted: mkfs.ext4 -d and
# mkfs.vfat + mcopy fill the partitions inside the raw file, GRUB's
# boot.img/core.img are written with dd. The LVM PV, VG and LV are made by the
# LVM tools on a loop device over partition 2 (--driverloaded n: no
# device-mapper table is ever set up), and the root ext4 is then written at the
# LV's offset in the raw file. Only /proc is mounted, inside the build chroot.
#
# The debootstrap minbase tar is shared with gen-debian-guest.sh (same cache
# file, same key), so that script is left unchanged. Each variant's finished
# trees are cached in ${V2X_CACHE:-$HOME/.cache/v2x}/debian-variants/, keyed
# by the hash of this script and of the overlays it copies
# (testdata/debian-variants/{common,<variant>}/rootfs); reruns only make disks.
set -euo pipefail
# Command substitutions ($(part_field ...), $(install_grub_bios ...)) stop on
# errors too.
shopt -s inherit_errexit

usage() { echo "usage: gen-debian-variants.sh OUTDIR [lvm|uefi ...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
out=$1
shift
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(lvm uefi)
for v in "${variants[@]}"; do case $v in lvm | uefi) ;; *) usage ;; esac; done

here=$(cd "$(dirname "$0")" && pwd)
self=$here/$(basename "$0")     # the main loop changes directory
companion=$here/debian-variants
cache_root=${V2X_CACHE:-$HOME/.cache/v2x}
cache=$cache_root/debian-variants
suite=bookworm
mirror=${V2X_DEBIAN_MIRROR:-http://deb.debian.org/debian}
disk_size=$((3 * 1024 * 1024 * 1024))
MiB=$((1024 * 1024))
# Packages on top of minbase common to both guests (zstd: initramfs-tools
# compresses with it on bookworm; dracut here keeps its gzip default).
# Networking is systemd-networkd (common/rootfs/etc/systemd/network), as in
# the main guest.
base_packages=(linux-image-amd64 systemd-sysv udev kmod zstd open-vm-tools)

# Fixed identities, so that the layout of every output is the same on each run.
lvm_disk_id=0x6c766d31
lvm_boot_uuid=6c766d31-b007-4a3e-9d1c-0e5f2a7b8c01
lvm_root_uuid=6c766d31-4007-4b2f-8e6d-1a2b3c4d5e02
lvm_pv_uuid=V2xLvm-Pv01-0000-0000-0000-0000-000001
uefi_disk_guid=75656669-0000-4d2a-9c3b-5f6e7d8c9a01
uefi_esp_partuuid=75656669-e5b0-4f1a-8b2c-3d4e5f6a7b02
uefi_root_partuuid=75656669-2007-4c3d-9e4f-5a6b7c8d9e03
uefi_root_uuid=75656669-2007-4e5f-8a9b-0c1d2e3f4a04
uefi_esp_volid=75656669       # FAT volume id; blkid shows it as 7565-6669
uefi_esp_uuid=7565-6669

t0=$(date +%s)
step() { echo "[gen-debian-variants $(($(date +%s) - t0))s] $*"; }
die() { echo "gen-debian-variants: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

need=()
for tool in debootstrap:debootstrap mkfs.ext4:e2fsprogs sfdisk:fdisk qemu-img:qemu-utils \
    pvcreate:lvm2 mkfs.vfat:dosfstools mcopy:mtools; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    step "installing ${need[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi
export MTOOLS_SKIP_CHECK=1 LVM_SUPPRESS_FD_WARNINGS=1
mkdir -p "$cache" "$out"

# Stage 1: the minbase debootstrap. The file name (key = the debootstrap
# arguments and mirror) is the one gen-debian-guest.sh uses, so whichever
# script runs first makes it for both.
boot_args=(--variant=minbase --arch=amd64 "$suite")
minbase_dir=$cache_root/debian-guest
minbase=$minbase_dir/minbase-$(echo "${boot_args[*]} $mirror" | sha256sum | cut -c1-16).tar
if [ ! -f "$minbase" ]; then
    step "debootstrap ${boot_args[*]} $mirror"
    mkdir -p "$minbase_dir"
    tmp=$(mktemp -d "$minbase_dir/debootstrap.XXXXXX")
    debootstrap "${boot_args[@]}" "$tmp" "$mirror"
    tar --numeric-owner --xattrs -C "$tmp" -cf "$minbase.new" .
    rm -rf --one-file-system "$tmp"
    mv "$minbase.new" "$minbase"
    step "debootstrap done"
fi

# --- Stage 2 helpers: a chroot made from minbase plus the overlays ----------

build=
loops=()
cleanup() {
    if [ -n "$build" ] && mountpoint -q "$build/proc"; then umount "$build/proc"; fi
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    if [ -n "${scratch:-}" ]; then rm -rf "$scratch"; fi
}
trap cleanup EXIT

# The cache key of a variant: this script and the overlay files it copies
# (paths and contents), not the README.
variant_key() {
    (cat "$self"; cd "$companion" && find common/rootfs "$1/rootfs" -type f | LC_ALL=C sort |
        while read -r f; do echo "$f"; cat "$f"; done) | sha256sum | cut -c1-16
}
in_root() {
    chroot "$build" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C \
        DEBIAN_FRONTEND=noninteractive "$@"
}
apt_install() {
    in_root apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
# start_build VARIANT KEY: a fresh chroot in $build with the overlays copied in
# (before any package is installed, so the packages see the final config).
start_build() {
    # Left-overs of interrupted builds (this or an older key).
    for build in "$cache/build-$1"-*; do
        [ -d "$build" ] || continue
        if mountpoint -q "$build/proc"; then umount "$build/proc"; fi
        rm -rf --one-file-system "$build"
    done
    build=$cache/build-$1-$2
    mkdir -p "$build"
    tar --numeric-owner --xattrs -C "$build" -xf "$minbase"
    mount -t proc proc "$build/proc"
    cp /etc/resolv.conf "$build/etc/resolv.conf"
    # No service starts in the chroot.
    printf '#!/bin/sh\nexit 101\n' > "$build/usr/sbin/policy-rc.d"
    chmod 755 "$build/usr/sbin/policy-rc.d"
    cp -r --preserve=mode "$companion/common/rootfs/." "$companion/$1/rootfs/." "$build/"
    in_root apt-get update -q
}
# finish_build: what an installed system would not carry (apt lists, logs, the
# build host's resolv.conf, a machine id), then unmount /proc.
finish_build() {
    in_root systemctl enable systemd-networkd.service v2x-boot-marker.service
    rm -f "$build/usr/sbin/policy-rc.d"
    in_root apt-get clean
    rm -rf "$build"/var/lib/apt/lists/* "$build"/var/cache/apt/*.bin \
        "$build"/var/log/*.log "$build"/var/log/apt/* "$build"/tmp/* "$build"/var/tmp/*
    : > "$build/etc/resolv.conf"
    : > "$build/etc/machine-id"
    umount "$build/proc"
}
newest_kernel() { (cd "$build/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -n1); }
# drop_old VARIANT KEY: trees of older versions of this script (~700 MB each).
drop_old() {
    local old
    for old in "$cache/$1"-*; do
        case $old in "$cache/$1-$2" | "$cache/$1-$2.done" | "$cache/$1-$2.initrd.txt") ;;
        *) rm -rf --one-file-system "$old" ;; esac
    done
}
# The GRUB serial/console lines both grub.cfg files start with (what
# update-grub makes of GRUB_TERMINAL and GRUB_SERIAL_COMMAND).
grub_head() {
    cat <<EOF
set default=0
set timeout=1
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
EOF
}
# check_initrd LISTING: the storage check on a list of initramfs paths. No
# virtio module may be inside (the point of the test guest); the VMware/SATA
# disk drivers must be.
check_initrd() {
    if grep -E '/virtio[^/]*\.ko' "$1"; then die "initramfs contains virtio modules (above)"; fi
    local m
    for m in ahci sd_mod vmw_pvscsi mptspi; do
        grep -q "/$m\.ko" "$1" || die "initramfs has no $m.ko"
    done
}

# --- Variant lvm: stage 2 ---------------------------------------------------
# Cached as $cache/lvm-KEY/root (the root LV's tree, /boot empty) and
# $cache/lvm-KEY/boot (the /boot partition's tree).
build_lvm() {
    local key=$1 dst=$cache/lvm-$1 kver
    rm -rf --one-file-system "$dst" "$dst.done" "$dst.initrd.txt"
    start_build lvm "$key"
    # dracut (and lvm2, which dracut's lvm module needs) before the kernel, so
    # that linux-image-amd64's initramfs dependency is met by dracut and its
    # postinst hook builds the initramfs with dracut (dracut conflicts with
    # initramfs-tools, which is therefore never installed).
    step "lvm: installing dracut lvm2"
    apt_install dracut lvm2
    step "lvm: installing ${base_packages[*]} grub-pc"
    apt_install "${base_packages[@]}" grub-pc
    kver=$(newest_kernel)
    [ -f "$build/boot/initrd.img-$kver" ] || die "lvm: no initramfs for $kver"
    # The guest's own lsinitrd; the list is kept beside the tree.
    in_root lsinitrd "/boot/initrd.img-$kver" > "$dst.initrd.txt.new"
    check_initrd "$dst.initrd.txt.new"
    grep -q '/dm-mod\.ko' "$dst.initrd.txt.new" || die "lvm: initramfs has no dm-mod.ko"
    grep -Eq 'usr/s?bin/lvm$' "$dst.initrd.txt.new" || die "lvm: initramfs has no lvm tool"
    grep -q 'lib/dracut' "$dst.initrd.txt.new" || die "lvm: initramfs is not dracut's"

    echo 'grub-pc grub-pc/install_devices multiselect /dev/sda' | in_root debconf-set-selections
    # GRUB's files on the /boot partition, as grub-install leaves them: the
    # partition is GRUB's root, so paths there have no /boot.
    mkdir -p "$build/boot/grub/i386-pc"
    cp "$build"/usr/lib/grub/i386-pc/*.mod "$build"/usr/lib/grub/i386-pc/*.lst \
        "$build/boot/grub/i386-pc/"
    in_root grub-editenv /boot/grub/grubenv create
    {
        echo "# Written by testdata/gen-debian-variants.sh to match /etc/default/grub"
        echo "# (GRUB_DISABLE_LINUX_UUID=true, root on LVM, separate /boot)."
        grub_head
        cat <<EOF
insmod part_msdos
insmod ext2
set root='hd0,msdos1'
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os {
	insmod gzio
	insmod part_msdos
	insmod ext2
	set root='hd0,msdos1'
	echo	'Loading Linux $kver ...'
	linux	/vmlinuz-$kver root=/dev/mapper/vmvg-root ro rd.lvm.lv=vmvg/root console=ttyS0
	echo	'Loading initial ramdisk ...'
	initrd	/initrd.img-$kver
}
EOF
    } > "$build/boot/grub/grub.cfg"
    # core.img for the post-MBR gap, finding grub.cfg and the modules on the
    # /boot partition by its fixed prefix.
    in_root grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img \
        -p '(hd0,msdos1)/grub' biosdisk part_msdos ext2
    cp "$build/usr/lib/grub/i386-pc/boot.img" "$build/boot/grub/i386-pc/boot.img"

    finish_build
    # Split the tree: /boot goes to its own partition, the root LV keeps an
    # empty /boot as mount point.
    mkdir -p "$dst"
    mv "$build/boot" "$dst/boot"
    mkdir -m 755 "$build/boot"
    mv "$build" "$dst/root"
    build=
    mv "$dst.initrd.txt.new" "$dst.initrd.txt"
    echo "$kver" > "$dst.done"
    drop_old lvm "$key"
    step "lvm: trees ready"
}

# --- Variant uefi: stage 2 --------------------------------------------------
# Cached as $cache/uefi-KEY/root (/boot/efi empty) and $cache/uefi-KEY/esp
# (the ESP's files).
build_uefi() {
    local key=$1 dst=$cache/uefi-$1 kver
    rm -rf --one-file-system "$dst" "$dst.done" "$dst.initrd.txt"
    start_build uefi "$key"
    step "uefi: installing initramfs-tools"
    apt_install initramfs-tools
    # Only the listed modules (etc/initramfs-tools/modules), as on a guest
    # whose initramfs was built for its own hardware.
    sed -i 's/^MODULES=.*/MODULES=list/' "$build/etc/initramfs-tools/initramfs.conf"
    grep -qx 'MODULES=list' "$build/etc/initramfs-tools/initramfs.conf"
    # grub-efi-amd64 is what the Debian installer puts on a UEFI system (it
    # pulls in grub-efi-amd64-bin, the x86_64-efi modules and grub-mkimage's
    # target); its postinst does not run grub-install on a first install.
    step "uefi: installing ${base_packages[*]} grub-efi-amd64"
    apt_install "${base_packages[@]}" grub-efi-amd64
    kver=$(newest_kernel)
    [ -f "$build/boot/initrd.img-$kver" ] || die "uefi: no initramfs for $kver"
    in_root lsinitramfs "/boot/initrd.img-$kver" > "$dst.initrd.txt.new"
    check_initrd "$dst.initrd.txt.new"

    # What the installer records for a non-removable EFI install.
    printf '%s\n' 'grub-efi-amd64 grub2/force_efi_extra_removable boolean false' \
        'grub-efi-amd64 grub2/update_nvram boolean true' | in_root debconf-set-selections
    # GRUB's modules on the root fs, as grub-install leaves them.
    mkdir -p "$build/boot/grub/x86_64-efi"
    cp "$build"/usr/lib/grub/x86_64-efi/*.mod "$build"/usr/lib/grub/x86_64-efi/*.lst \
        "$build/boot/grub/x86_64-efi/"
    in_root grub-editenv /boot/grub/grubenv create
    {
        echo "# Written by testdata/gen-debian-variants.sh to match /etc/default/grub"
        echo "# (GRUB_DISABLE_LINUX_UUID=true, GRUB_CMDLINE_LINUX=\"console=ttyS0\")."
        grub_head
        cat <<EOF
insmod part_gpt
insmod ext2
set root='hd0,gpt2'
menuentry 'Debian GNU/Linux' --class debian --class gnu-linux --class gnu --class os {
	insmod gzio
	insmod part_gpt
	insmod ext2
	set root='hd0,gpt2'
	echo	'Loading Linux $kver ...'
	linux	/boot/vmlinuz-$kver root=/dev/sda2 ro console=ttyS0
	echo	'Loading initial ramdisk ...'
	initrd	/boot/initrd.img-$kver
}
EOF
    } > "$build/boot/grub/grub.cfg"
    # grubx64.efi as grub-install --target=x86_64-efi makes it: an embedded
    # early config finds the root fs by UUID (hint: the second GPT partition
    # of the first disk) and sets the prefix to its /boot/grub, where normal
    # reads grub.cfg and loads further modules. The image carries what it
    # needs to get there, so it works from any path on the ESP (including a
    # copy at \EFI\BOOT\BOOTX64.EFI).
    cat > "$build/tmp/load.cfg" <<EOF
search.fs_uuid $uefi_root_uuid root hd0,gpt2
set prefix=(\$root)'/boot/grub'
EOF
    mkdir -p "$build/boot/efi/EFI/debian"
    in_root grub-mkimage -O x86_64-efi -o /boot/efi/EFI/debian/grubx64.efi \
        -c /tmp/load.cfg -p /boot/grub \
        part_gpt part_msdos fat ext2 search search_fs_uuid normal configfile \
        linux gzio echo serial terminal efi_gop all_video
    rm -f "$build/tmp/load.cfg"

    finish_build
    # Split the tree: the ESP's files go to their own partition, the root fs
    # keeps an empty /boot/efi as mount point.
    mkdir -p "$dst"
    mv "$build/boot/efi" "$dst/esp"
    mkdir -m 755 "$build/boot/efi"
    mv "$build" "$dst/root"
    build=
    mv "$dst.initrd.txt.new" "$dst.initrd.txt"
    echo "$kver" > "$dst.done"
    drop_old uefi "$key"
    step "uefi: trees ready"
}

# --- Stage 3 helpers: disks -------------------------------------------------

# check_fs TOOL ARGS...: a read-only fsck; its report is shown only on failure.
check_fs() {
    "$@" > "$scratch/fsck.txt" 2>&1 || { cat "$scratch/fsck.txt" >&2; die "$* failed"; }
}

# part_field IMAGE N FIELD: start or size (sectors) of partition N, from sfdisk.
part_field() {
    sfdisk -J "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$2 - 1]['$3'])"
}
le64() { printf "$(printf '\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)) 0 0 0 0)"; }
le16() { printf "$(printf '\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)))"; }
# install_grub_bios IMAGE TREE: boot.img's code into the MBR (keeping the disk
# id and the partition table from byte 440 on) with the LBA of core.img (1)
# at 0x5c; core.img into sectors 1.. of the gap. core.img's first sector
# (diskboot) loads the rest from the blocklist at its end: LBA 2, size-1.
# Prints the size of core.img in sectors.
install_grub_bios() {
    local img=$1 grubdir=$2/grub/i386-pc sectors
    sectors=$((($(stat -c %s "$grubdir/core.img") + 511) / 512))
    [ "$sectors" -lt 2048 ] || die "core.img too big"
    dd if="$grubdir/boot.img" of="$img" bs=440 count=1 conv=notrunc status=none
    le64 1 | dd of="$img" bs=1 seek=$((0x5c)) conv=notrunc status=none
    dd if="$grubdir/core.img" of="$img" bs=512 seek=1 conv=notrunc status=none
    le64 2 | dd of="$img" bs=1 seek=$((512 + 500)) conv=notrunc status=none
    le16 $((sectors - 1)) | dd of="$img" bs=1 seek=$((512 + 508)) conv=notrunc status=none
    echo "$sectors"
}

# --- Variant lvm: stage 3 ---------------------------------------------------
# lvmq LVM-COMMAND ARGS...: runs it without the warnings that --driverloaded n
# and the disabled backups always cause; any other message still shows.
lvmq() {
    "$@" 2> >(grep -v -e 'Activation disabled' -e 'metadata update is NOT backed up' \
        -e 'not zeroed' >&2 || true)
}
make_lvm() {
    local dst=$1 kver=$2 p1 p1n p2 p2n pv lvmopt pe_start lv_bytes seg lv_off sectors
    step "lvm: making lvm.raw"
    rm -f lvm.raw lvm-sparse.vmdk lvm-vg.txt
    truncate -s "$disk_size" lvm.raw
    sfdisk -q lvm.raw <<EOF
label: dos
label-id: $lvm_disk_id
start=2048, size=$((512 * MiB / 512)), type=83, bootable
type=8e
EOF
    p1=$(part_field lvm.raw 1 start)
    p1n=$(part_field lvm.raw 1 size)
    p2=$(part_field lvm.raw 2 start)
    p2n=$(part_field lvm.raw 2 size)
    mkfs.ext4 -q -F -L boot -U "$lvm_boot_uuid" -E "offset=$((p1 * 512)),nodiscard" \
        -d "$dst/boot" lvm.raw "$((p1n / 2))k"

    # The PV on partition 2 through a loop device; the LVM tools see only that
    # device (--devices) and never load a device-mapper table (--activate n).
    pv=$(losetup -f --show -o $((p2 * 512)) --sizelimit $((p2n * 512)) lvm.raw)
    loops+=("$pv")
    lvmopt=(--driverloaded n --devices "$pv" --config 'backup { backup = 0 archive = 0 }')
    lvmq pvcreate -q "${lvmopt[@]}" -y --uuid "$lvm_pv_uuid" --norestorefile "$pv" >/dev/null
    lvmq vgcreate -q "${lvmopt[@]}" vmvg "$pv" >/dev/null
    lvmq lvcreate -q "${lvmopt[@]}" --zero n --activate n -n root -l 100%FREE vmvg >/dev/null
    lvmq vgcfgbackup -q "${lvmopt[@]}" -f lvm-vg.txt vmvg >/dev/null
    chmod 644 lvm-vg.txt
    # Where the LV's one linear segment lies: from PE 0 of the PV, whose
    # extents start pe_start bytes into the partition.
    pe_start=$(lvmq pvs "${lvmopt[@]}" --noheadings --units b --nosuffix -o pe_start "$pv" | tr -d ' ')
    lv_bytes=$(lvmq lvs "${lvmopt[@]}" --noheadings --units b --nosuffix -o lv_size vmvg/root | tr -d ' ')
    seg=$(lvmq lvs "${lvmopt[@]}" --noheadings --segments -o segtype,seg_pe_ranges vmvg/root | xargs)
    case $seg in "linear $pv:0-"*) ;; *) die "lvm: unexpected LV layout: $seg" ;; esac
    lvm_vg_uuid=$(lvmq vgs "${lvmopt[@]}" --noheadings -o vg_uuid vmvg | tr -d ' ')
    lvm_lv_uuid=$(lvmq lvs "${lvmopt[@]}" --noheadings -o lv_uuid vmvg/root | tr -d ' ')
    losetup -d "$pv"
    loops=()
    lv_off=$((p2 * 512 + pe_start))
    mkfs.ext4 -q -F -L root -U "$lvm_root_uuid" -E "offset=$lv_off,nodiscard" \
        -d "$dst/root" lvm.raw "$((lv_bytes / 1024))k"
    sectors=$(install_grub_bios lvm.raw "$dst/boot")

    # Reference checks: both ext4 file systems, the MBR, the LV as LVM reads it.
    check_fs e2fsck -fn "lvm.raw?offset=$((p1 * 512))"
    check_fs e2fsck -fn "lvm.raw?offset=$lv_off"
    sfdisk -d lvm.raw > "$scratch/lvm.sfdisk"
    grep -q "lvm.raw1 : start= *2048, size= *$p1n, type=83, bootable" "$scratch/lvm.sfdisk"
    grep -q "lvm.raw2 : start= *$p2, size= *$p2n, type=8e" "$scratch/lvm.sfdisk"
    pv=$(losetup -f --show -r -o $((p2 * 512)) --sizelimit $((p2n * 512)) lvm.raw)
    loops+=("$pv")
    lvmopt=(--driverloaded n --devices "$pv" --config 'backup { backup = 0 archive = 0 }')
    lvmq vgcfgbackup -q "${lvmopt[@]}" -f "$scratch/vg-check.txt" vmvg >/dev/null
    grep -q '^		root {' "$scratch/vg-check.txt" || die "lvm: LV root not in the VG metadata"
    [ "$(lvmq lvs "${lvmopt[@]}" --noheadings -o lv_name vmvg | xargs)" = root ] || die "lvm: lvs"
    losetup -d "$pv"
    loops=()
    [ "$(blkid -p -o value -s UUID -O $((p1 * 512)) lvm.raw)" = "$lvm_boot_uuid" ]
    [ "$(blkid -p -o value -s UUID -O "$lv_off" lvm.raw)" = "$lvm_root_uuid" ]

    step "lvm: converting to VMDK"
    qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse lvm.raw lvm-sparse.vmdk
    {
        echo "lvm_kernel $kver"
        echo "lvm_hostname vmlvm"
        echo "lvm_disk_id $lvm_disk_id"
        echo "lvm_boot_uuid $lvm_boot_uuid"
        echo "lvm_root_uuid $lvm_root_uuid"
        echo "lvm_pv_uuid $lvm_pv_uuid"
        echo "lvm_vg_uuid $lvm_vg_uuid"
        echo "lvm_lv_uuid $lvm_lv_uuid"
        echo "lvm_boot_offset $((p1 * 512))"
        echo "lvm_pv_offset $((p2 * 512))"
        echo "lvm_lv_offset $lv_off"
        echo "lvm_lv_size $lv_bytes"
        echo "lvm_core_sectors $sectors"
    } >> "$scratch/info.txt"
}

# --- Variant uefi: stage 3 --------------------------------------------------
make_uefi() {
    local dst=$1 kver=$2 p1 p1n p2 p2n esp=$scratch/esp.img
    step "uefi: making uefi.raw"
    rm -f uefi.raw uefi-sparse.vmdk
    truncate -s "$disk_size" uefi.raw
    sfdisk -q uefi.raw <<EOF
label: gpt
label-id: $uefi_disk_guid
start=2048, size=$((100 * MiB / 512)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$uefi_esp_partuuid, name="EFI System Partition"
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$uefi_root_partuuid, name="root"
EOF
    p1=$(part_field uefi.raw 1 start)
    p1n=$(part_field uefi.raw 1 size)
    p2=$(part_field uefi.raw 2 start)
    p2n=$(part_field uefi.raw 2 size)

    # The ESP: FAT32 made in a file of the partition's size, filled with
    # mtools (directories first, then the files), then copied into place.
    truncate -s $((p1n * 512)) "$esp"
    mkfs.vfat -F 32 -n EFI -i "$uefi_esp_volid" "$esp" >/dev/null
    (cd "$dst/esp" && find . -mindepth 1 -type d | LC_ALL=C sort) | while read -r d; do
        mmd -i "$esp" "::/${d#./}"
    done
    (cd "$dst/esp" && find . -type f | LC_ALL=C sort) | while read -r f; do
        mcopy -i "$esp" "$dst/esp/${f#./}" "::/${f#./}"
    done
    dd if="$esp" of=uefi.raw bs=1M seek=$((p1 * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
    mkfs.ext4 -q -F -L root -U "$uefi_root_uuid" -E "offset=$((p2 * 512)),nodiscard" \
        -d "$dst/root" uefi.raw "$((p2n / 2))k"

    # Reference checks: the ESP as it is in the disk, the ext4, the GPT.
    rm -f "$esp"
    dd if=uefi.raw of="$esp" bs=1M skip=$((p1 * 512)) count=$((p1n * 512)) \
        iflag=skip_bytes,count_bytes conv=sparse status=none
    check_fs fsck.vfat -n "$esp"
    mdir -i "$esp" -b ::/EFI/debian/ | grep -qi '/EFI/debian/grubx64.efi'
    if mdir -i "$esp" -b ::/EFI/BOOT >/dev/null 2>&1; then die "uefi: ESP has \\EFI\\BOOT"; fi
    rm -f "$esp"
    check_fs e2fsck -fn "uefi.raw?offset=$((p2 * 512))"
    sfdisk -d uefi.raw > "$scratch/uefi.sfdisk"
    grep -qi "uefi.raw1 : start= *2048, size= *$p1n, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$uefi_esp_partuuid" "$scratch/uefi.sfdisk"
    grep -qi "uefi.raw2 : start= *$p2, size= *$p2n, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$uefi_root_partuuid" "$scratch/uefi.sfdisk"
    [ "$(blkid -p -o value -s UUID -O $((p1 * 512)) uefi.raw)" = "$uefi_esp_uuid" ]
    [ "$(blkid -p -o value -s UUID -O $((p2 * 512)) uefi.raw)" = "$uefi_root_uuid" ]

    step "uefi: converting to VMDK"
    qemu-img convert -q -f raw -O vmdk -o subformat=monolithicSparse uefi.raw uefi-sparse.vmdk
    {
        echo "uefi_kernel $kver"
        echo "uefi_hostname vmuefi"
        echo "uefi_disk_guid $uefi_disk_guid"
        echo "uefi_esp_partuuid $uefi_esp_partuuid"
        echo "uefi_root_partuuid $uefi_root_partuuid"
        echo "uefi_esp_uuid $uefi_esp_uuid"
        echo "uefi_root_uuid $uefi_root_uuid"
        echo "uefi_esp_offset $((p1 * 512))"
        echo "uefi_root_offset $((p2 * 512))"
        echo "uefi_loader \\EFI\\debian\\grubx64.efi"
    } >> "$scratch/info.txt"
}

# --- Main --------------------------------------------------------------------
out=$(cd "$out" && pwd)
scratch=$(mktemp -d "$out/.work.XXXXXX")
: > "$scratch/info.txt"
for v in "${variants[@]}"; do
    key=$(variant_key "$v")
    # (An if, not "||": set -e does not apply inside the left side of ||.)
    if [ ! -f "$cache/$v-$key.done" ]; then "build_$v" "$key"; fi
    kver=$(cat "$cache/$v-$key.done")
    # The storage check again on the kept listing (the tree is never changed
    # once cached, so the listing stays that of its initramfs).
    check_initrd "$cache/$v-$key.initrd.txt"
    cd "$out"
    "make_$v" "$cache/$v-$key" "$kver"
done
cp "$scratch/info.txt" "$out/variants-info.txt"
ls -ls "$out"/*.raw "$out"/*.vmdk
step "done"
