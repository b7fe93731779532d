#!/usr/bin/env python3
"""How long messages stay inside the server, read off a loopback capture.

A load tool's latency is the sum of its own sending, the server's work, the
kernel's wake-ups and its own reading. The capture splits the server's part
out: for every client-to-server packet that carries a SEND, the time until
each server-to-client packet that follows it (up to the next SEND) is the
time those deliveries spent in the server, wake-up included.

    tcpdump -i lo -n -s 200 -w /tmp/run.pcap 'tcp port 8080' &
    stomp-load --url ws://127.0.0.1:8080/ws --mode latency --rate 100 ...
    kill %1; scripts/residency.py /tmp/run.pcap 8080

A packet counts as a SEND when its TCP payload has at least --min-send
bytes (default 150: a SEND with stomp-load's 100-byte body; CONNECT,
SUBSCRIBE, ACKs and heart-beats are smaller). Meant for paced runs, where
SENDs do not overlap; at saturation the pairing means nothing.
"""

import argparse
import struct
import sys

LINK_HEADER = {1: 14, 113: 16, 0: 4}  # Ethernet (Linux lo), Linux cooked, BSD loopback


def packets(path):
    """(time in seconds, source port, destination port, payload bytes) of
    every TCP packet with a payload."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            sys.exit(f"{path}: not a pcap file")
        magic = struct.unpack("<I", head[:4])[0]
        if magic not in (0xA1B2C3D4, 0xA1B23C4D):
            sys.exit(f"{path}: not a little-endian pcap file (magic {magic:#x})")
        scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
        link = struct.unpack("<I", head[20:24])[0]
        if link not in LINK_HEADER:
            sys.exit(f"{path}: link type {link} is not loopback or Ethernet")
        skip = LINK_HEADER[link]
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            secs, frac, captured, _ = struct.unpack("<IIII", record)
            data = f.read(captured)
            ip = data[skip:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ip_len = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ip_len:]
            if len(tcp) < 13:
                continue
            source, destination = struct.unpack(">HH", tcp[:4])
            payload = total - ip_len - (tcp[12] >> 4) * 4
            if payload > 0:
                yield secs + frac * scale, source, destination, payload


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pcap")
    parser.add_argument("port", type=int, help="the server's port")
    parser.add_argument("--min-send", type=int, default=150)
    args = parser.parse_args()

    every, first, last = [], [], []
    sends = 0
    sent_at, out = None, []

    def close_send():
        if out:
            every.extend(out)
            first.append(out[0])
            last.append(out[-1])

    for at, source, destination, size in packets(args.pcap):
        if destination == args.port and size >= args.min_send:
            close_send()
            sends, sent_at, out = sends + 1, at, []
        elif source == args.port and sent_at is not None:
            out.append((at - sent_at) * 1e6)
    close_send()
    if not every:
        sys.exit("no SEND followed by a delivery in the capture")
    print(f"{sends} SENDs, {len(every)} delivery packets")
    for name, values in (("each delivery", every), ("first of a SEND", first), ("last of a SEND", last)):
        print(
            f"{name:>16}: p50 {percentile(values, 50):7.1f} µs, "
            f"p90 {percentile(values, 90):7.1f}, p99 {percentile(values, 99):7.1f}"
        )


if __name__ == "__main__":
    main()
