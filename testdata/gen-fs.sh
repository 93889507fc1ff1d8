#!/bin/bash
# Generates filesystem fixtures for tests/fs_read.rs into OUTDIR with the
# reference tools: e2fsprogs (ext2/3/4, populated with mkfs -d, no mount),
# ntfs-3g (mkntfs + a FUSE mount of the image file, needs /dev/fuse and root),
# dosfstools + mtools (FAT16/FAT32, no mount).
set -euo pipefail
out=$1
mkdir -p "$out"
cd "$out"
export SOURCE_DATE_EPOCH=1700000000 E2FSPROGS_FAKE_TIME=1700000000

# --- a source tree for ext -------------------------------------------------
tree=$out/tree
rm -rf "$tree"
mkdir -p "$tree/etc/sysconfig" "$tree/usr/lib/modules/6.1.0" "$tree/big" "$tree/boot"
printf 'NAME="Test Linux"\nVERSION_ID="1.0"\n' > "$tree/etc/os-release"
echo 'HOSTNAME=guest' > "$tree/etc/sysconfig/network"
# A file over 1 MiB with non-repeating content.
python3 -c '
import sys, hashlib
out = bytearray()
i = 0
while len(out) < (1 << 20) + 12345:
    out += hashlib.sha256(str(i).encode()).digest()
    i += 1
sys.stdout.buffer.write(bytes(out[:(1 << 20) + 12345]))' > "$tree/usr/lib/modules/6.1.0/vmlinuz"
# ~3000 entries so the directory gets an htree index.
for i in $(seq 1 3000); do : > "$tree/big/file-with-a-longish-name-$i"; done
echo kernel > "$tree/boot/vmlinuz-6.1.0"
ln -s vmlinuz-6.1.0 "$tree/boot/vmlinuz"                         # fast, relative
ln -s /usr/lib/modules/6.1.0/vmlinuz "$tree/boot/abs-link"        # fast, absolute
ln -s ../etc/os-release "$tree/usr/os-release"                   # relative with ..
long=$(printf 'd%.0s' $(seq 1 70))/$(printf 'e%.0s' $(seq 1 70))
ln -s "/$long/target" "$tree/long-link"                          # > 60 bytes: slow symlink
touch "$tree/empty"
# A sparse file larger than MAX_FILE_READ (512 MiB), a little data at 300 MiB.
truncate -s 600M "$tree/sparse"
printf 'data in the middle' | dd of="$tree/sparse" bs=1 seek=$((300 << 20)) conv=notrunc status=none

for kind in ext2 ext3 ext4; do
  rm -f "$kind.img"
  mkfs.$kind -q -F -L "label-$kind" -U 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 \
    -d "$tree" "$kind.img" 32M
done

# ext4 images whose journal holds a committed transaction not yet
# checkpointed: debugfs writes a journal transaction carrying new copies of
# the root directory block and of the inode table block, so only a reader
# that replays the journal sees /replayed. ext4-journal.img has a 64-bit
# journal with checksum v3 (what ext4-view can replay); ext4-journal-plain.img
# has one without checksums (what older kernels write).
make_journaled() { # IMAGE JO-OPTIONS...
  local image=$1; shift
  rm -f "$image"
  mkfs.ext4 -q -F -L journaled -d "$tree" "$image" 32M
  cp "$image" scratch.img
  debugfs -w -R "write /dev/null replayed" scratch.img >/dev/null 2>&1
  local rootblk bs ino itblk
  rootblk=$(debugfs -R "blocks /" scratch.img 2>/dev/null | awk '{print $1}')
  bs=$(dumpe2fs -h scratch.img 2>/dev/null | awk -F: '/^Block size/ {gsub(/ /,"",$2); print $2}')
  ino=$(debugfs -R "stat /replayed" scratch.img 2>/dev/null | awk '/^Inode:/ {print $2}')
  itblk=$(debugfs -R "imap <$ino>" scratch.img 2>/dev/null | awk '/located at block/ {print $4}' | tr -d ,)
  dd if=scratch.img of=rootblock.bin bs="$bs" skip="$rootblk" count=1 status=none
  dd if=scratch.img of=inodeblock.bin bs="$bs" skip="$itblk" count=1 status=none
  rm -f scratch.img
  debugfs -w -f - "$image" >/dev/null 2>&1 <<EOF
jo $*
jw -b $rootblk rootblock.bin
jw -b $itblk inodeblock.bin
jc
EOF
  rm -f rootblock.bin inodeblock.bin
  dumpe2fs -h "$image" 2>/dev/null | grep -q needs_recovery
}
make_journaled ext4-journal.img -c -v 3
make_journaled ext4-journal-plain.img

# --- NTFS -------------------------------------------------------------------
rm -f ntfs.img
truncate -s 16M ntfs.img
mkntfs -F -f -q -L WINVOL ntfs.img >/dev/null 2>&1
mnt=$out/ntfs-mnt
mkdir -p "$mnt"
ntfs-3g ntfs.img "$mnt"
trap 'umount "$mnt" 2>/dev/null || true' EXIT
mkdir -p "$mnt/Windows/System32/config" "$mnt/Program Files/App"
printf 'fake hive\n' > "$mnt/Windows/System32/config/SYSTEM"
cp "$tree/usr/lib/modules/6.1.0/vmlinuz" "$mnt/Windows/System32/ntoskrnl.exe"
printf 'app\n' > "$mnt/Program Files/App/Readme With Spaces.txt"
for i in $(seq 1 300); do : > "$mnt/Program Files/App/f$i.dat"; done
printf 'short name twin\n' > "$mnt/LongFileName.Text"
# A sparse file larger than the volume: holes read as zeros.
printf 'sparse tail' | dd of="$mnt/sparse.bin" bs=1 seek=$((40 << 20)) status=none
printf 'sparse head' | dd of="$mnt/sparse.bin" bs=1 seek=4096 conv=notrunc status=none
# A Windows symlink reparse point (tag 0xA000000C) to \Windows\System32,
# relative flag off; substitute and print names both "\Windows\System32".
python3 - "$mnt/syslink" <<'PY'
import os, struct, sys
t = "\\Windows\\System32".encode("utf-16-le")
body = struct.pack("<HHHHI", 0, len(t), len(t), len(t), 0) + t + t
open(sys.argv[1], "wb").close()
os.setxattr(sys.argv[1], "system.ntfs_reparse_data", struct.pack("<IHH", 0xA000000C, len(body), 0) + body)
PY
umount "$mnt"
trap - EXIT
rmdir "$mnt"

# --- FAT ----------------------------------------------------------------------
for bits in 16 32; do
  img=fat$bits.img
  rm -f "$img"
  if [ "$bits" = 32 ]; then size=40000; else size=16000; fi
  mkfs.vfat -F "$bits" -n "ESP$bits" -i 1234ABCD -C "$img" "$size" >/dev/null
  export MTOOLS_SKIP_CHECK=1
  mmd -i "$img" ::/EFI ::/EFI/BOOT ::/EFI/Microsoft ::/EFI/Microsoft/Boot "::/Long Directory Name"
  printf 'bootloader\n' > bootx64.efi
  mcopy -i "$img" bootx64.efi ::/EFI/BOOT/BOOTX64.EFI
  mcopy -i "$img" "$tree/usr/lib/modules/6.1.0/vmlinuz" ::/EFI/Microsoft/Boot/bootmgfw.efi
  printf 'grub config\n' > grub.cfg
  mcopy -i "$img" grub.cfg "::/Long Directory Name/A rather long file name.cfg"
  mcopy -i "$img" grub.cfg ::/lower.txt
  for i in $(seq 1 200); do mcopy -i "$img" grub.cfg "::/Long Directory Name/entry number $i"; done
  rm -f bootx64.efi grub.cfg
done
rm -rf "$tree"
