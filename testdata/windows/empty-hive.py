#!/usr/bin/env python3
"""Writes the smallest valid empty registry hive (regf) to argv[1].

hivex has no "create an empty hive" call, and no tool on Debian makes one,
so this script writes one by hand from the format's layout: a base block
(checksummed), one 4 KiB hive bin holding a security (sk) cell and the root
key (nk) cell, and a free cell for the rest. hivexregedit --merge then fills
it from .reg text, and hivexget validates it.
"""
import struct
import sys

NO_CELL = 0xFFFFFFFF


def cell(body):
    size = (len(body) + 4 + 7) // 8 * 8
    return struct.pack("<i", -size) + body + b"\0" * (size - 4 - len(body))


root_name = sys.argv[2].encode("ascii") if len(sys.argv) > 2 else b"ROOT"
# Cells start after the 32-byte hbin header; offsets are hbin-relative.
sk_off = 32
# Minimal self-relative security descriptor: revision 1, control
# SE_SELF_RELATIVE, no owner/group/SACL/DACL.
sd = struct.pack("<BBHIIII", 1, 0, 0x8000, 0, 0, 0, 0)
sk_body = b"sk" + struct.pack("<HIIII", 0, sk_off, sk_off, 1, len(sd)) + sd
sk = cell(sk_body)
nk_off = sk_off + len(sk)
nk_body = b"nk" + struct.pack(
    "<HQ" + "I" * 15 + "HH",
    0x2C,  # KEY_HIVE_ENTRY | KEY_NO_DELETE | KEY_COMP_NAME
    0,  # last written
    0,  # access bits
    0,  # parent
    0, 0,  # subkeys, volatile subkeys
    NO_CELL, NO_CELL,  # subkey lists
    0, NO_CELL,  # values, value list
    sk_off,  # security
    NO_CELL,  # class name
    0, 0, 0, 0, 0,  # max name/class/value name/value data, workvar
    len(root_name), 0,
) + root_name
nk = cell(nk_body)
cells = sk + nk
bin_size = 4096
free = bin_size - 32 - len(cells)
hbin = b"hbin" + struct.pack("<IIQQI", 0, bin_size, 0, 0, 0) + cells + struct.pack("<i", free)
hbin += b"\0" * (bin_size - len(hbin))

base = bytearray(4096)
base[0:4] = b"regf"
struct.pack_into("<IIQIIIIIII", base, 4, 1, 1, 0, 1, 3, 0, 1, nk_off, bin_size, 1)
csum = 0
for i in range(127):
    csum ^= struct.unpack_from("<I", base, i * 4)[0]
csum = {0: 1, 0xFFFFFFFF: 0xFFFFFFFE}.get(csum, csum)
struct.pack_into("<I", base, 508, csum)

with open(sys.argv[1], "wb") as f:
    f.write(bytes(base) + hbin)
