#!/usr/bin/env python3
"""loadgen: Ethernet frames to fresh destination MACs at Poisson intervals, from inside a host.

Why fresh destinations: a learning switch never learns a destination (only sources), so every
frame misses the flow table and raises one packet-in at the switch's master; the controller load
is then exactly the frame rate, whatever flows were installed before. The paper's switches
"generate Packet_In messages with intervals drawn from a Poisson distribution"; here they are real
frames through real OVS.

The sender runs in the host's network namespace (Mininet `host.popen`) and writes raw frames on an
AF_PACKET socket (root). Frames go out on an absolute schedule (sum of exponential gaps from the
start), so a late wake-up is caught up rather than stretching every later interval. On SIGTERM (or
after `--duration`) it writes `{"sent": N, "seconds": S}` to `--stats` and exits 0.

Frame: destination 06:<seed byte>:<32-bit counter> (unicast, locally administered, never a source
anywhere), the interface's own source MAC, EtherType 0x88B5 (IEEE local experimental), payload
seq (8 bytes) and send time (8 bytes, ns), padded to the 60-byte minimum.

Usage (in a host): python -m experiments.loadgen --iface h1-eth0 [--rate 200] [--seed 1]
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

ETHERTYPE = 0x88B5
MIN_FRAME = 60
DEFAULT_RATE = 200.0


def dst_mac(seed: int, n: int) -> bytes:
    """The n-th fresh destination of a sender seeded with `seed` (unique for 2**32 frames)."""
    return bytes([0x06, seed & 0xFF]) + struct.pack("!I", n & 0xFFFFFFFF)


def frame(dst: bytes, src: bytes, seq: int, now_ns: int) -> bytes:
    body = struct.pack("!QQ", seq, now_ns)
    raw = dst + src + struct.pack("!H", ETHERTYPE) + body
    return raw + bytes(max(0, MIN_FRAME - len(raw)))


def send_times(rng: random.Random, rate: float, start: float) -> Iterator[float]:
    """Absolute send times of a Poisson process of `rate` per second beginning at `start`."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    t = start
    while True:
        t += rng.expovariate(rate)
        yield t


def iface_mac(iface: str) -> bytes:
    return bytes.fromhex(Path(f"/sys/class/net/{iface}/address").read_text().strip().replace(":", ""))


class _Stop(Exception):
    pass


def run(iface: str, rate: float, seed: int, duration: Optional[float], stats: Optional[Path]) -> int:
    src = iface_mac(iface)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))

    def stop(*_: Any) -> None:
        raise _Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    started = time.monotonic()
    end = started + duration if duration else float("inf")
    sent = 0
    try:
        for t in send_times(random.Random(seed), rate, started):
            if t >= end:
                break
            delay = t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sock.send(frame(dst_mac(seed, sent), src, sent, time.time_ns()))
            sent += 1
    except _Stop:
        pass
    finally:
        sock.close()
        if stats is not None:
            stats.write_text(json.dumps({"sent": sent, "seconds": time.monotonic() - started,
                                         "rate": rate, "seed": seed, "iface": iface}))
    return 0


class HostSender:
    """This sender running inside a Mininet host (started by the experiment, stopped by PID)."""

    def __init__(self, host: Any, rate: float, seed: int, stats: Path) -> None:
        repo = Path(__file__).resolve().parent.parent
        self.stats = stats
        self.proc = host.popen([sys.executable, "-m", "experiments.loadgen", "--iface",
                                host.defaultIntf().name, "--rate", str(rate), "--seed", str(seed),
                                "--stats", str(stats)], cwd=str(repo))

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> dict:
        """SIGTERM, wait, and return what it reported ({} if it wrote nothing)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except Exception:  # noqa: BLE001 -- subprocess.TimeoutExpired: it must not outlive us
                self.proc.kill()
                self.proc.wait(timeout)
        try:
            return json.loads(self.stats.read_text())
        except (OSError, ValueError):
            return {}


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iface", required=True)
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="mean frames per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=None, help="seconds (default: until SIGTERM)")
    parser.add_argument("--stats", type=Path, default=None, help="write counts here on exit")
    args = parser.parse_args(argv)
    return run(args.iface, args.rate, args.seed, args.duration, args.stats)


if __name__ == "__main__":
    sys.exit(main())
