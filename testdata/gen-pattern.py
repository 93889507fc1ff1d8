#!/usr/bin/env python3
"""Writes a deterministic sparse raw disk: random runs, compressible text runs,
explicitly written zero runs, and holes. Usage: gen-pattern.py OUT SIZE [SEED] [RUNS]"""
import random
import sys

out, size = sys.argv[1], int(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 20261122
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 48
r = random.Random(seed)
text = b"v2x test pattern: the quick brown fox jumps over the lazy dog. " * 64
with open(out, "wb") as f:
    f.truncate(size)
    for i in range(runs):
        length = r.randrange(1, min(size, 1 << 20))
        off = r.randrange(0, size - length + 1)
        kind = i % 4
        if kind == 0 or kind == 1:
            data = r.randbytes(length)
        elif kind == 2:
            data = (text * (length // len(text) + 1))[:length]
        else:
            data = bytes(length)
        f.seek(off)
        f.write(data)
    # The last byte of the disk is data, so size handling is exercised.
    f.seek(size - 1)
    f.write(b"\xee")
