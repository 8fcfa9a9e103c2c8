#!/usr/bin/env python3
"""The query file of bench/node-dns: LINES dnsperf lines over NAMES external
names drawn Zipf-like (s = 1.0, as popularity of DNS names is), each name
asked for A and AAAA (as glibc and Go ask), shuffled with a fixed seed.

usage: queries.py NAMES LINES > file
"""
import bisect
import random
import sys

names, lines = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(17)
weights = [1.0 / (rank + 1) for rank in range(names)]
cumulative = []
total = 0.0
for w in weights:
    total += w
    cumulative.append(total)
out = []
while len(out) < lines:
    rank = bisect.bisect_left(cumulative, rng.random() * total)
    name = f"host{rank}.svc{rank % 97}.example.com"
    out.append(f"{name} A")
    out.append(f"{name} AAAA")
sys.stdout.write("\n".join(out[:lines]) + "\n")
