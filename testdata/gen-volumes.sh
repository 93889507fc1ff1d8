#!/bin/bash
# Writes the volume-layer fixtures into OUTDIR with real tools: sfdisk for
# MBR/GPT (4096-byte sectors through a loop device with --sector-size),
# pvcreate/vgcreate/lvcreate for LVM2 (run with --driverloaded n: no
# device-mapper is needed, only loop devices and root), mkswap, cryptsetup
# luksFormat and mkfs.xfs on plain files. Each table or layout is also dumped
# by the tool that made it (sfdisk --json, vgcfgbackup, lvs/pvs --reportformat
# json, blkid -p) as the oracle the tests compare against.
# Usage: gen-volumes.sh OUTDIR
set -euo pipefail
out=$1
mkdir -p "$out"
cd "$out"
export LVM_SUPPRESS_FD_WARNINGS=1
# mkfs.xfs refuses filesystems under 300 MB unless it believes it runs under
# fstests; these variables are its documented escape hatch for test images.
export TEST_DIR=/tmp TEST_DEV=/dev/null QA_CHECK_FS=1
loops=()
cleanup() {
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
}
trap cleanup EXIT
loop() { # loop FILE [losetup options...] -> prints the device
    local f=$1
    shift
    local l
    l=$(losetup -f --show "$@" "$f")
    loops+=("$l")
    echo "$l"
}
MiB=$((1024 * 1024))
put() { # put SRC DST OFFSET_BYTES: copies a file into an image, keeping holes
    dd if="$1" of="$2" bs=64K seek="$3" oflag=seek_bytes conv=notrunc,sparse status=none
}

# Contents: swap with a fixed uuid and label, LUKS1 and LUKS2 headers, XFS.
truncate -s 8M swap.bin
mkswap -q -L v2xswap -U 0b0e3ba1-7b9f-4c8e-9d2a-5f1e2d3c4b5a swap.bin
truncate -s 8M luks2.bin
cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
    --luks2-metadata-size 16k --luks2-keyslots-size 1m \
    --uuid 6f1d2c3b-4a59-4e8f-8a7b-1c2d3e4f5a6b luks2.bin <<<"v2x-test-pass"
truncate -s 4M luks1.bin
cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 \
    --uuid 1a2b3c4d-5e6f-4a8b-9c0d-e1f2a3b4c5d6 luks1.bin <<<"v2x-test-pass"

# mbr.img: 2 primaries (1 bootable 0x83 with LUKS2, 2 swap 0x82), an extended
# partition, logicals 5 (LUKS1, 0x83) and 6 (0x8e, empty).
truncate -s 64M mbr.img
sfdisk -q mbr.img <<'T'
label: dos
label-id: 0x1234abcd
start=2048, size=16384, type=83, bootable
start=18432, size=16384, type=82
start=34816, size=90112, type=5
start=36864, size=16384, type=83
start=55296, size=16384, type=8e
T
sfdisk --json mbr.img >mbr.json
put luks2.bin mbr.img $((2048 * 512))
put swap.bin mbr.img $((18432 * 512))
put luks1.bin mbr.img $((36864 * 512))
blkid -p -o export -O $((2048 * 512)) mbr.img >mbr-p1.blkid
blkid -p -o export -O $((18432 * 512)) mbr.img >mbr-p2.blkid
blkid -p -o export -O $((36864 * 512)) mbr.img >mbr-p5.blkid

# gpt.img: ESP, a legacy-BIOS-bootable Linux root with a non-ASCII name, swap.
truncate -s 64M gpt.img
sfdisk -q gpt.img <<'T'
label: gpt
label-id: 5C0B6A52-8E7E-4E43-9F7D-6A2C1E0D9B11
size=8MiB, type=U, name="EFI System", uuid=0A1B2C3D-4E5F-4061-8273-8495A6B7C8D9
size=32MiB, type=L, name="racine données", attrs="LegacyBIOSBootable"
size=8MiB, type=S, name="swap"
T
sfdisk --json gpt.img >gpt.json
start3=$(python3 -c 'import json,sys; print(json.load(open("gpt.json"))["partitiontable"]["partitions"][2]["start"])')
put swap.bin gpt.img $((start3 * 512))

# gpt-4k.img and mbr-4k.img: the same tools on a loop device with 4096-byte
# logical sectors.
truncate -s 64M gpt-4k.img
l=$(loop gpt-4k.img --sector-size 4096)
sfdisk -q "$l" <<'T' || true
label: gpt
size=8MiB, type=U, name="EFI System"
size=16MiB, type=L, name="root"
T
sfdisk --json "$l" >gpt-4k.json
losetup -d "$l"
truncate -s 64M mbr-4k.img
l=$(loop mbr-4k.img --sector-size 4096)
sfdisk -q "$l" <<'T' || true
label: dos
start=256, size=2048, type=82
start=2304, size=4096, type=83
T
sfdisk --json "$l" >mbr-4k.json
losetup -d "$l"
start1=$(python3 -c 'import json; print(json.load(open("mbr-4k.json"))["partitiontable"]["partitions"][0]["start"])')
put swap.bin mbr-4k.img $((start1 * 4096))

# LVM: PV 1 is partition 2 of a GPT disk, PV 2 a whole disk. VG "v2x-vg"
# (1 MiB extents) holds "lin", linear in two segments (16 MiB on PV 1, then
# 16 MiB on PV 2), and "str-ipe", striped over both PVs (64 KiB stripes). Each
# LV gets an XFS (xfs-lin.bin, xfs-str.bin) copied into its extents.
truncate -s 80M lvm-disk1.img
sfdisk -q lvm-disk1.img <<'T'
label: gpt
size=4MiB, type=L, name="boot"
size=60MiB, type=E6D6D379-F507-44C2-A23C-238F2A3DF928, name="lvm"
T
sfdisk --json lvm-disk1.img >lvm-disk1.json
p2start=$(python3 -c 'import json; p=json.load(open("lvm-disk1.json"))["partitiontable"]["partitions"][1]; print(p["start"], p["size"])')
read -r p2s p2n <<<"$p2start"
truncate -s 64M lvm-disk2.img
pv1=$(loop lvm-disk1.img -o $((p2s * 512)) --sizelimit $((p2n * 512)))
pv2=$(loop lvm-disk2.img)
lvmopt=(--driverloaded n --devices "$pv1,$pv2" --config 'backup { backup = 0 archive = 0 }')
pvcreate -q "${lvmopt[@]}" -y "$pv1" "$pv2" >/dev/null
vgcreate -q "${lvmopt[@]}" -s 1M v2x-vg "$pv1" "$pv2" >/dev/null
lvcreate -q "${lvmopt[@]}" --zero n --activate n -n lin -L 16M v2x-vg "$pv1" >/dev/null 2>&1
lvcreate -q "${lvmopt[@]}" --zero n --activate n -n str-ipe -i 2 -I 64k -L 32M v2x-vg "$pv1" "$pv2" >/dev/null 2>&1
lvextend -q "${lvmopt[@]}" -L +16M v2x-vg/lin "$pv2" >/dev/null 2>&1
vgcfgbackup -q "${lvmopt[@]}" -f lvm-vg.txt v2x-vg >/dev/null
lvs "${lvmopt[@]}" --segments --units b --reportformat json \
    -o lv_name,seg_start_pe,seg_size_pe,segtype,stripes,stripe_size,seg_pe_ranges,lv_uuid v2x-vg >lvm-segs.json
pvs "${lvmopt[@]}" --units b --reportformat json -o pv_name,pv_uuid,pe_start,vg_name >lvm-pvs.json
echo "$pv1 $pv2" >lvm-loops.txt

# lvm-wrap.img: a whole-disk PV of VG "wrapvg" whose metadata was rewritten
# (long tags added) until the newest copy wraps round the end of the circular
# metadata buffer.
truncate -s 16M lvm-wrap.img
pvw=$(loop lvm-wrap.img)
wopt=(--driverloaded n --devices "$pvw" --config 'backup { backup = 0 archive = 0 }')
pvcreate -q "${wopt[@]}" -y "$pvw" >/dev/null
vgcreate -q "${wopt[@]}" -s 1M wrapvg "$pvw" >/dev/null
lvcreate -q "${wopt[@]}" --zero n --activate n -n l -L 3M wrapvg >/dev/null 2>&1
wrapped() {
    python3 -c "
import struct, sys
h = open('lvm-wrap.img', 'rb').read(8192)[4096:4608]
size, = struct.unpack_from('<Q', h, 32)
off, n = struct.unpack_from('<QQ', h, 40)
sys.exit(0 if off + n > size else 1)"
}
for i in $(seq 1 60); do
    tags=()
    for j in $(seq 1 10); do tags+=(--addtag "t${i}_$j$(printf '%01000d' 0)"); done
    vgchange -q "${wopt[@]}" "${tags[@]}" wrapvg >/dev/null 2>&1
    if wrapped; then break; fi
done
wrapped || { echo "LVM metadata never wrapped" >&2; exit 1; }
lvs "${wopt[@]}" --segments --units b --reportformat json \
    -o lv_name,seg_start_pe,seg_size_pe,seg_pe_ranges,lv_uuid wrapvg >lvm-wrap-segs.json
vgs "${wopt[@]}" --reportformat json -o vg_name,vg_seqno wrapvg >lvm-wrap-vg.json
losetup -d "$pvw"

truncate -s 32M xfs-lin.bin xfs-str.bin
mkfs.xfs -q -L lin xfs-lin.bin
mkfs.xfs -q -L str xfs-str.bin
losetup -d "$pv1" "$pv2"
python3 - <<'P'
import json, re
# Copies each XFS into its LV's extents, following the layout LVM reported.
vg = open("lvm-vg.txt").read()
pvs = json.load(open("lvm-pvs.json"))["report"][0]["pv"]
segs = json.load(open("lvm-segs.json"))["report"][0]["seg"]
loops = open("lvm-loops.txt").read().split()
files = {loops[0]: ("lvm-disk1.img", None), loops[1]: ("lvm-disk2.img", 0)}
p = json.load(open("lvm-disk1.json"))["partitiontable"]["partitions"][1]
files[loops[0]] = ("lvm-disk1.img", p["start"] * 512)
pe_start = {x["pv_name"]: int(x["pe_start"].rstrip("B")) for x in pvs}
extent = 1 << 20
src = {"lin": open("xfs-lin.bin", "rb").read(), "str-ipe": open("xfs-str.bin", "rb").read()}
imgs = {f: open(f, "r+b") for f, _ in files.values()}
def put(dev, pe, off_in_pe, data):
    f, base = files[dev]
    imgs[f].seek(base + pe_start[dev] + pe * extent + off_in_pe)
    imgs[f].write(data)
for s in segs:
    data = src[s["lv_name"]]
    start = int(s["seg_start_pe"]) * extent
    n = int(s["seg_size_pe"]) * extent
    ranges = [r.split(":") for r in s["seg_pe_ranges"].split()]
    ranges = [(d, int(r.split("-")[0])) for d, r in ranges]
    if int(s["stripes"]) == 1:
        put(ranges[0][0], ranges[0][1], 0, data[start:start + n])
    else:
        ss = int(s["stripe_size"].rstrip("B"))
        k = len(ranges)
        for c in range(n // ss):
            dev, pe = ranges[c % k]
            put(dev, pe, (c // k) * ss, data[start + c * ss:start + (c + 1) * ss])
for f in imgs.values():
    f.close()
P
