#!/usr/bin/env python3
"""Dependent request/response traffic that shows which rule version handled each packet.

Rules of different versions mark packets with different DSCP values. The server answers each
UDP request with the DSCP the request arrived with; the client records, for each answer, that
value and the DSCP the answer itself arrived with. If versions only grow, an answer marked with
an older version than its request was handled by an old rule after its request (its cause) was
handled by the new one: what LIME's two-phase updates rule out (HotNets'12, sec. 4.1).

    dscp_echo.py serve PORT
    dscp_echo.py ask HOST PORT --count N --interval S --out FILE   (JSON: sent, answers)

One way, for when a rule took effect (experiments/barrier_lag.py): each packet carries the time it
was sent (time.time(): every Mininet host shares the clock), the recorder keeps it with the DSCP
the packet arrived with.

    dscp_echo.py send HOST PORT --count N --interval S
    dscp_echo.py record PORT --seconds S --out FILE   (JSON: [seq, sent, received, DSCP] each)

Standard library only: it runs with any Python inside a Mininet host.
"""
from __future__ import annotations

import argparse
import json
import socket
import struct
import time
from typing import List, Tuple

IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)  # Linux
REQUEST = struct.Struct("!I")        # seq
ANSWER = struct.Struct("!IB")        # seq, the request's DSCP
STAMPED = struct.Struct("!Id")       # seq, time sent


def _received(sock: socket.socket) -> Tuple[bytes, int, tuple]:
    """(payload, DSCP it arrived with, sender)."""
    data, anc, _, addr = sock.recvmsg(64, socket.CMSG_SPACE(4))
    tos = 0
    for level, kind, raw in anc:
        if level == socket.IPPROTO_IP and kind == socket.IP_TOS:
            tos = raw[0]
    return data, tos >> 2, addr


def _socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    sock.bind(("0.0.0.0", port))
    return sock


def serve(port: int) -> None:
    sock = _socket(port)
    while True:
        data, dscp, addr = _received(sock)
        if len(data) == REQUEST.size:
            sock.sendto(ANSWER.pack(REQUEST.unpack(data)[0], dscp), addr)


def _collect(sock: socket.socket, answers: List[List[float]], sent: List[float],
             until: float) -> None:
    """Answers that arrive before `until` (monotonic), as [seq, request's DSCP, answer's DSCP,
    time the request was sent, time the answer arrived] (time.time())."""
    while True:
        try:
            data, dscp, _ = _received(sock)
        except BlockingIOError:
            left = until - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.0005))
            continue
        if len(data) == ANSWER.size:
            seq, asked = ANSWER.unpack(data)
            answers.append([seq, asked, dscp, sent[seq] if seq < len(sent) else 0.0, time.time()])


def ask(host: str, port: int, count: int, interval: float) -> dict:
    sock = _socket()
    sock.setblocking(False)
    answers: List[List[float]] = []
    sent: List[float] = []
    start = time.monotonic()
    for seq in range(count):
        sent.append(time.time())
        sock.sendto(REQUEST.pack(seq), (host, port))
        _collect(sock, answers, sent, start + (seq + 1) * interval)
    _collect(sock, answers, sent, time.monotonic() + 0.5)  # the last answers
    return {"sent": count, "answers": answers}  # see _collect


def send(host: str, port: int, count: int, interval: float) -> None:
    sock = _socket()
    start = time.monotonic()
    for seq in range(count):
        sock.sendto(STAMPED.pack(seq, time.time()), (host, port))
        left = start + (seq + 1) * interval - time.monotonic()
        if left > 0:
            time.sleep(left)


def record(port: int, seconds: float) -> List[List[float]]:
    """[seq, sent, received, DSCP] for each stamped packet that arrives within `seconds`."""
    sock = _socket(port)
    got: List[List[float]] = []
    until = time.monotonic() + seconds
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return got
        sock.settimeout(left)
        try:
            data, dscp, _ = _received(sock)
        except socket.timeout:
            return got
        if len(data) == STAMPED.size:
            got.append([*STAMPED.unpack(data), time.time(), dscp])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    for cmd, interval in (("ask", 0.002), ("send", 0.001)):  # both send --count packets
        c = sub.add_parser(cmd)
        c.add_argument("host")
        c.add_argument("port", type=int)
        c.add_argument("--count", type=int, default=1000)
        c.add_argument("--interval", type=float, default=interval)
        if cmd == "ask":
            c.add_argument("--out", required=True)
    r = sub.add_parser("record")
    r.add_argument("port", type=int)
    r.add_argument("--seconds", type=float, required=True)
    r.add_argument("--out", required=True)
    args = p.parse_args()
    if args.cmd == "serve":
        serve(args.port)
    elif args.cmd == "send":
        send(args.host, args.port, args.count, args.interval)
    elif args.cmd == "record":
        with open(args.out, "w") as f:
            json.dump(record(args.port, args.seconds), f)
    else:
        result = ask(args.host, args.port, args.count, args.interval)
        with open(args.out, "w") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
