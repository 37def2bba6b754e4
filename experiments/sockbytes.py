"""Bytes a process sent and received over TCP, from the kernel's per-socket counters (`ss -tinp`).

Why not /proc/PID/io: its rchar/wchar count read()/write()-family calls only; Python's socket
send()/recv() (all of a controller's OpenFlow, Redis and bus traffic) never show there. The
kernel keeps `bytes_sent` and `bytes_received` (tcp_info) for every TCP socket, and `ss -p` names
the processes holding it. A reading maps pid -> {socket: (sent, received)}; a delta sums, over the
sockets open at the second reading, what each moved since the first (a socket opened in between
counts from zero; one closed in between is lost: the controllers keep theirs open).
"""
from __future__ import annotations

import re
import subprocess
from typing import Any, Dict, Iterable, Mapping, Tuple

Reading = Dict[Any, Dict[Tuple[str, str], Tuple[int, int]]]  # owner -> socket -> (sent, received)

_PID = re.compile(r"pid=(\d+)")
_SENT = re.compile(r"\bbytes_sent:(\d+)")
_RECV = re.compile(r"\bbytes_received:(\d+)")


def parse(text: str, pids: Iterable[int]) -> Reading:
    """`ss -tinpH` output -> per wanted pid, (local, peer) -> (bytes sent, bytes received)."""
    wanted = set(pids)
    out: Reading = {p: {} for p in wanted}
    owners: Tuple[int, ...] = ()
    key = ("", "")
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            # State Recv-Q Send-Q Local Peer users:((...)): the queues change from one reading
            # to the next, so a socket is named by its two addresses only.
            fields = line.split()
            at = next((i for i, f in enumerate(fields) if f.startswith("users:")), -1)
            owners = tuple(p for p in (int(x) for x in _PID.findall(line)) if p in wanted)
            if at < 2:
                owners = ()
            else:
                key = (fields[at - 2], fields[at - 1])
            continue
        if not owners:
            continue
        sent, recv = _SENT.search(line), _RECV.search(line)
        value = (int(sent.group(1)) if sent else 0, int(recv.group(1)) if recv else 0)
        for p in owners:
            out[p][key] = value
    return out


def read(pids: Iterable[int]) -> Reading:
    res = subprocess.run(["ss", "-tinpH"], capture_output=True, text=True, check=True)
    return parse(res.stdout, pids)


def delta(before: Reading, after: Reading) -> Dict[Any, Dict[str, int]]:
    """owner (pid, or whatever the readings are keyed by) -> {"sent", "received"} in between."""
    out = {}
    for pid, socks in after.items():
        old: Mapping[Tuple[str, str], Tuple[int, int]] = before.get(pid, {})
        sent = recv = 0
        for k, (s, r) in socks.items():
            s0, r0 = old.get(k, (0, 0))
            if s < s0 or r < r0:  # the address pair was reused by a new socket
                s0 = r0 = 0
            sent, recv = sent + s - s0, recv + r - r0
        out[pid] = {"sent": sent, "received": recv}
    return out
