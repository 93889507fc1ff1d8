#!/usr/bin/env bash
# Runs the v2x test suite: installs the reference tools it needs (Debian),
# then the fast tier (cargo test) and, when V2X_CORPUS names the shared
# corpus, the real-world corpus check.
# Usage: testdata/run-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# command → Debian package, for every reference tool a test runs.
while read -r cmd pkg; do
  command -v "$cmd" >/dev/null || need+=("$pkg")
done <<'TOOLS'
qemu-img qemu-utils
qemu-io qemu-utils
python3 python3
bzip2 bzip2
cc build-essential
cpio cpio
modprobe kmod
sfdisk fdisk
mkfs.ext4 e2fsprogs
debugfs e2fsprogs
mkfs.vfat dosfstools
mcopy mtools
blkid util-linux
losetup mount
mkfs.xfs xfsprogs
mkfs.btrfs btrfs-progs
mkntfs ntfs-3g
hivexget libhivex-bin
hivexregedit libwin-hivex-perl
pvcreate lvm2
cryptsetup cryptsetup-bin
gzip gzip
xz xz-utils
zstd zstd
lz4 lz4
virt-xml-validate libvirt-clients
virsh libvirt-clients
xmllint libxml2-utils
TOOLS
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(printf "%s\n" "${need[@]}" | sort -u)
fi

# The slow tier (V2X_SLOW_TESTS=1) builds a Debian guest and boots it under
# QEMU. Debian 12's qemu-system-x86 needs its own qemu-utils (7.2), which
# replaces a newer backported qemu-img: do that before any test runs.
if [ "${V2X_SLOW_TESTS:-0}" = 1 ] && ! command -v qemu-system-x86_64 >/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    qemu-system-x86 qemu-utils/bookworm debootstrap
fi
# UEFI boots (tests/boot_variants.rs) need OVMF; the variant guests need LVM
# and FAT tools to build (gen-debian-variants.sh installs those itself too).
if [ "${V2X_SLOW_TESTS:-0}" = 1 ] && [ ! -f /usr/share/OVMF/OVMF_CODE_4M.fd ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    ovmf lvm2 dosfstools mtools
fi

echo "== fast tier: cargo test --workspace (slow tier: ${V2X_SLOW_TESTS:-0})"
env -u V2X_CORPUS cargo test --workspace --locked

if [ -n "${V2X_CORPUS:-}" ]; then
  echo "== corpus check against $V2X_CORPUS"
  cargo test --locked -p v2x-formats --test corpus -- --nocapture
  cargo test --locked --test print_source_corpus -- --nocapture
  cargo test --locked --test vm_corpus -- --nocapture
  cargo test --locked --test ova_corpus -- --nocapture
fi
