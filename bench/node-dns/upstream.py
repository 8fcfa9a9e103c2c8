#!/usr/bin/env python3
"""A local upstream resolver for bench/node-dns: answers every A/AAAA
question after a fixed delay (a few ms, as a real upstream a network hop
away), with a TTL of 30-300 s that depends on the name only, and counts the
queries that reach it: COUNT_FILE holds "ALL IN_ZONE", the number of
queries and of those for names in ZONE (which a node's DNS should never
send upstream), rewritten every 200 ms and at exit.
Names starting with "nx-" get NXDOMAIN with an SOA (MINIMUM 60).

usage: upstream.py PORT DELAY_MS COUNT_FILE ZONE
"""
import asyncio
import signal
import struct
import sys
import zlib

port, delay_ms, count_file = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
zone = sys.argv[4].lower().strip(".").encode()
count = 0
in_zone = 0


def question_name(query):
    at = 12
    labels = []
    while at < len(query) and query[at] != 0:
        n = query[at]
        labels.append(query[at + 1 : at + 1 + n])
        at += 1 + n
    return b".".join(labels).lower(), at + 1


def answer(query):
    if len(query) < 12:
        return None
    name, at = question_name(query)
    if at + 4 > len(query):
        return None
    qtype, qclass = struct.unpack("!HH", query[at : at + 4])
    question = query[12 : at + 4]
    ttl = 30 + zlib.crc32(name) % 271
    flags = 0x8180 | (query[2] & 0x01) << 8  # QR, RD copied, RA
    header_id = query[:2]
    if name.startswith(b"nx-"):
        # NXDOMAIN with the SOA of "." (owner: root), MINIMUM 60.
        soa = b"\x02ns\x00\x0ahostmaster\x00" + struct.pack("!IIIII", 1, 3600, 600, 86400, 60)
        rr = b"\x00" + struct.pack("!HHIH", 6, 1, 60, len(soa)) + soa
        return header_id + struct.pack("!HHHHH", (flags & 0xFFF0) | 3, 1, 0, 1, 0) + question + rr
    if qtype == 1:
        rdata = bytes([192, 0, 2, zlib.crc32(name) % 254 + 1])
    elif qtype == 28:
        rdata = bytes.fromhex("20010db8000000000000000000000000")[:15] + bytes([zlib.crc32(name) % 254 + 1])
    else:
        return header_id + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + question
    rr = b"\xc0\x0c" + struct.pack("!HHIH", qtype, qclass, ttl, len(rdata)) + rdata
    return header_id + struct.pack("!HHHHH", flags, 1, 1, 0, 0) + question + rr


class Server(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        global count, in_zone
        count += 1
        name, _ = question_name(data)
        if name == zone or name.endswith(b"." + zone):
            in_zone += 1
        reply = answer(data)
        if reply is not None:
            loop.call_later(delay_ms / 1000, self.transport.sendto, reply, addr)


def save():
    with open(count_file + ".tmp", "w") as f:
        f.write(f"{count} {in_zone}\n")
    import os
    os.replace(count_file + ".tmp", count_file)


async def main():
    await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", port))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        save()
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
    save()


loop = asyncio.new_event_loop()
loop.run_until_complete(main())
