"""Numbered frames to fresh destinations, sent from one host and counted at another: an
end-to-end check that a controller's packet-ins and packet-outs were neither lost, duplicated
nor reordered while its control path moved.

Every frame goes to a destination MAC no switch has learnt (experiments.loadgen's frames), so
each one misses the flow table, raises a packet-in at the tenant's controller, and reaches the
other hosts of the slice only through the controller's packet-out (a flood). The receiver keeps
the sequence numbers in arrival order.

    python -m sdnmig.seqframes send --iface h1-eth0 --count 2000 --rate 200 --seed 7 --out F
    python -m sdnmig.seqframes recv --iface h2-eth0 --seed 7 --out F   (until SIGTERM)
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import time
from pathlib import Path
from typing import Any, List, Optional, Sequence

from experiments.loadgen import ETHERTYPE, dst_mac, frame, iface_mac

ETH_P_ALL = 0x0003


def send(iface: str, count: int, rate: float, seed: int, out: Path) -> int:
    src = iface_mac(iface)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    start = time.monotonic()
    for seq in range(count):
        due = start + seq / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        sock.send(frame(dst_mac(seed, seq), src, seq, time.monotonic_ns()))
    out.write_text(json.dumps({"sent": count, "seconds": time.monotonic() - start}))
    return 0


def receive(iface: str, seed: int, out: Path) -> int:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.settimeout(0.2)
    seqs: List[int] = []
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    prefix = bytes([0x06, seed & 0xFF])
    out.with_name(out.name + ".ready").write_text("1")
    while not stopping:
        try:
            raw, addr = sock.recvfrom(2048)
        except socket.timeout:
            continue
        except InterruptedError:
            continue
        if addr[2] == socket.PACKET_OUTGOING or len(raw) < 22:
            continue
        if raw[:2] == prefix and struct.unpack_from("!H", raw, 12)[0] == ETHERTYPE:
            seqs.append(struct.unpack_from("!Q", raw, 14)[0])
    out.write_text(json.dumps({"seqs": seqs}))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdnmig.seqframes", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--rate", type=float, default=200.0)
    r = sub.add_parser("recv")
    for p in (s, r):
        p.add_argument("--iface", required=True)
        p.add_argument("--seed", type=int, default=7)
        p.add_argument("--out", type=Path, required=True)
    args: Any = ap.parse_args(argv)
    if args.cmd == "send":
        return send(args.iface, args.count, args.rate, args.seed, args.out)
    return receive(args.iface, args.seed, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
