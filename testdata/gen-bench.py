#!/usr/bin/env python3
"""Writes the benchmark disk: SIZE bytes virtual with DATA bytes of data in
1 MiB runs scattered at 1 MiB-aligned offsets (fixed seed). Half the runs are
random bytes, half compressible text, as on a real guest.
Usage: gen-bench.py OUT [SIZE] [DATA]"""
import random
import sys

out = sys.argv[1]
size = int(sys.argv[2]) if len(sys.argv) > 2 else 4 << 30
data = int(sys.argv[3]) if len(sys.argv) > 3 else 3 << 29
run = 1 << 20
r = random.Random(42)
slots = r.sample(range(size // run), data // run)
slots.sort()
words = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randrange(2, 10))).encode()
         for _ in range(4096)]
text = b" ".join(r.choice(words) for _ in range(400000))
with open(out, "wb") as f:
    f.truncate(size)
    for i, s in enumerate(slots):
        f.seek(s * run)
        if i % 2 == 0:
            f.write(r.randbytes(run))
        else:
            o = r.randrange(0, len(text) - run)
            f.write(text[o:o + run])
