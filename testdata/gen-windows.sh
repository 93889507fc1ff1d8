#!/bin/bash
# Generates Windows guest fixtures into OUTDIR:
#   <variant>/SOFTWARE, <variant>/SYSTEM  hives made from testdata/windows/*.reg
#   <variant>/ntoskrnl.exe                a tiny fake PE with the right Machine field
#   <variant>/hiberfil.sys                hibernated ("hibr") or zeroed header
#   <variant>/*.export.reg                hivexregedit --export of each hive (the oracle)
#   <variant>.ntfs                        an NTFS volume holding the above at Windows paths
# Variants: win10 (x86_64, hibernated, VMware tools), win11 (build 22631,
# aarch64), srv2019 (i386 kernel, ControlSet002 current, Hyper-V + virtio),
# win7 (version only in the CurrentVersion string "6.1").
# hivex cannot create an empty hive, so windows/empty-hive.py writes one.
# Needs: python3, hivex tools (libhivex-bin, libwin-hivex-perl), ntfs-3g (mkntfs + FUSE mount).
set -euo pipefail
out=${1:?usage: gen-windows.sh OUTDIR}
src=$(cd "$(dirname "$0")/windows" && pwd)
mkdir -p "$out"
mnt=$(mktemp -d)
cleanup() { mountpoint -q "$mnt" && umount "$mnt"; rmdir "$mnt"; }
trap cleanup EXIT

make_hive() { # NAME REGFILE OUT
    python3 "$src/empty-hive.py" "$3" "$1"
    hivexregedit --merge --prefix "HKEY_LOCAL_MACHINE\\$1" "$3" "$2"
    hivexregedit --export "$3" '\' > "$3.export.reg"
}

fake_pe() { # MACHINE(hex) OUT
    python3 - "$1" "$2" <<'PY'
import struct, sys
machine, path = int(sys.argv[1], 16), sys.argv[2]
img = bytearray(1024)
img[0:2] = b"MZ"
struct.pack_into("<I", img, 0x3C, 0x80)
img[0x80:0x84] = b"PE\0\0"
struct.pack_into("<HH", img, 0x84, machine, 0)
open(path, "wb").write(img)
PY
}

for v in win10 win11 srv2019 win7; do
    d="$out/$v"
    mkdir -p "$d"
    case $v in
        win10) sys=win10 machine=8664 hiber=hibr ;;
        win11) sys=win10 machine=aa64 hiber=zero ;;
        srv2019) sys=srv2019 machine=014c hiber=zero ;;
        win7) sys=win10 machine=8664 hiber=zero ;;
    esac
    make_hive SOFTWARE "$src/SOFTWARE-$v.reg" "$d/SOFTWARE"
    make_hive SYSTEM "$src/SYSTEM-$sys.reg" "$d/SYSTEM"
    hivexget "$d/SOFTWARE" 'Microsoft\Windows NT\CurrentVersion' ProductName > /dev/null
    hivexget "$d/SYSTEM" 'Select' Current > /dev/null
    fake_pe "$machine" "$d/ntoskrnl.exe"
    head -c 8192 /dev/zero > "$d/hiberfil.sys"
    if [ "$hiber" = hibr ]; then
        printf 'hibr' | dd of="$d/hiberfil.sys" conv=notrunc status=none
    fi

    img="$out/$v.ntfs"
    truncate -s 16M "$img"
    mkntfs -q -F -f -L "$v" "$img" 2>/dev/null
    ntfs-3g "$img" "$mnt"
    mkdir -p "$mnt/Windows/System32/config"
    cp "$d/SOFTWARE" "$d/SYSTEM" "$mnt/Windows/System32/config/"
    cp "$d/ntoskrnl.exe" "$mnt/Windows/System32/"
    cp "$d/hiberfil.sys" "$mnt/"
    umount "$mnt"
    ntfscat "$img" /Windows/System32/config/SYSTEM | cmp - "$d/SYSTEM"
done
