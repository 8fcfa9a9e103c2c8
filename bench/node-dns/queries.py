#!/usr/bin/env python3
"""The query file of bench/node-dns: what the stub resolvers of pods in
namespace nd-web (resolv.conf: `search nd-web.svc.ZONE svc.ZONE ZONE`,
`options ndots:5`) send for LOOKUPS lookups, in the order they send it,
A and AAAA of each candidate name (as glibc and Go ask), until a candidate
answers. A fixed seed, so every run asks the same.

The lookups, drawn at random:
- 60% an outside name, host<r>.svc<r % 97>.example.com with r drawn
  Zipf-like (s = 1.0, as popularity of DNS names is) from NAMES ranks: fewer
  than 5 dots, so the three search-path expansions come first (NXDOMAIN),
  then the name itself: 8 questions;
- 20% a Service of another namespace by its short name, api-<k>.nd-shop: the
  first expansion misses (api-<k>.nd-shop.nd-web.svc.ZONE, NXDOMAIN), the
  second answers (A, and AAAA NODATA): 4 questions;
- 15% a Service of the pod's own namespace, web-<k>: answered at the first
  expansion: 2 questions;
- 5% the SRV of a headless Service's grpc port by its full name
  (_grpc._tcp.hl-<k>.nd-shop.svc.ZONE: 5 dots or more, asked as is): 1.

usage: queries.py NAMES LOOKUPS ZONE CLUSTER_IP_SERVICES WEB_SERVICES HEADLESS > file
"""
import bisect
import random
import sys

names, lookups, zone = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
api_services, web_services, headless = (int(a) for a in sys.argv[4:7])
search = [f"nd-web.svc.{zone}", f"svc.{zone}", zone]
rng = random.Random(17)
cumulative = []
total = 0.0
for rank in range(names):
    total += 1.0 / (rank + 1)
    cumulative.append(total)

out = []


def ask(name):
    out.append(f"{name} A")
    out.append(f"{name} AAAA")


for _ in range(lookups):
    draw = rng.random()
    if draw < 0.60:
        rank = bisect.bisect_left(cumulative, rng.random() * total)
        name = f"host{rank}.svc{rank % 97}.example.com"
        for domain in search:
            ask(f"{name}.{domain}")
        ask(name)
    elif draw < 0.80:
        name = f"api-{rng.randrange(api_services)}.nd-shop"
        ask(f"{name}.{search[0]}")
        ask(f"{name}.{search[1]}")
    elif draw < 0.95:
        ask(f"web-{rng.randrange(web_services)}.{search[0]}")
    else:
        out.append(f"_grpc._tcp.hl-{rng.randrange(headless)}.nd-shop.svc.{zone} SRV")
sys.stdout.write("\n".join(out) + "\n")
