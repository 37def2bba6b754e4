"""client_costs: what the Python Redis client costs on the ERC 1 MB path, option by option.

The choices in `ryu_apps.kvs` and `ryu_apps.learning.store` rest on these figures: RESP2 instead
of redis-py 8's RESP3 for pub/sub, 1 MiB socket reads, the learning table read as one string a
Lua script flattens instead of HGETALL, and SHA-256 for the snapshot digest. Each pair is timed
against one private Redis (a bus, started and stopped here, `rdbcompression no` as the instances
run) on loopback, in this process, without eventlet.

  dump     DUMP of an incompressible 1 MB string, 64 KiB vs 1 MiB socket reads
  pubsub   1 MB PUBLISH until the subscriber has it, RESP3 vs RESP2 (RESP3 only on redis-py >= 5)
  table    1000 learned hosts: HGETALL + conversion vs `L2Store.load` (flattened by Lua)
  digest   SHA-256 of 1 MB
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from experiments.common import (Progress, add_convention_args, plot_panels, print_headline,  # noqa: E402
                                result_document, summarize, write_json)
from ryu_apps.kvs import HAS_READ_SIZE, open_client  # noqa: E402
from ryu_apps.learning.core import Learn, mac_of  # noqa: E402
from ryu_apps.learning.store import L2Store, macs_key  # noqa: E402
from sdnmig import instances  # noqa: E402

NAME = "client_costs"
DPID = 0x5A
MB = 1_000_000
HOSTS = 1000


def _time_ms(fn: Callable[[], object], runs: int) -> List[float]:
    fn()  # warm: connection made, script loaded
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(round((time.perf_counter() - t) * 1000, 4))
    return out


def _pubsub_ms(pub: "redis.Redis", sub_client: "redis.Redis", payload: bytes, runs: int) -> List[float]:
    ps = sub_client.pubsub(ignore_subscribe_messages=True)
    ps.subscribe("client-costs")
    while ps.get_message(timeout=1.0) is not None:
        pass

    def once() -> None:
        pub.publish("client-costs", payload)
        while ps.get_message(timeout=2.0) is None:
            pass

    try:
        return _time_ms(once, runs)
    finally:
        ps.close()


def measure(bus: instances.Bus, runs: int, progress: Progress) -> Dict[str, List[float]]:
    password = bus.password
    client = lambda **kw: open_client(bus.host, bus.port, password, socket_timeout=5, **kw)  # noqa: E731
    base = client()
    blob = os.urandom(MB)
    base.set("cc:blob", blob)
    store = L2Store(base)
    store.commit([Learn(DPID, bytes([2, 0x5A, 0, 0, i >> 8, i & 0xFF]), i % 48 + 1)
                  for i in range(HOSTS)])
    samples: Dict[str, List[float]] = {}

    def hgetall_load() -> object:
        raw = base.hgetall(macs_key(DPID))
        return {mac_of(k.decode()): int(v) for k, v in raw.items()}

    assert hgetall_load() == store.load(DPID), "the two table loads disagree"
    resp3 = redis.Redis(host=bus.host, port=bus.port, password=password, protocol=3)
    small_reads = client(socket_read_size=65536) if HAS_READ_SIZE else base
    pairs = [
        ("dump 64 KiB reads", lambda: _time_ms(lambda: small_reads.dump("cc:blob"), runs)),
        ("dump 1 MiB reads", lambda: _time_ms(lambda: base.dump("cc:blob"), runs)),
        ("pubsub RESP3", lambda: _pubsub_ms(base, resp3, blob, runs)),
        ("pubsub RESP2", lambda: _pubsub_ms(base, client(), blob, runs)),
        ("table HGETALL", lambda: _time_ms(hgetall_load, runs)),
        ("table flattened", lambda: _time_ms(lambda: store.load(DPID), runs)),
        ("sha256 1 MB", lambda: _time_ms(lambda: hashlib.sha256(blob).hexdigest(), runs)),
    ]
    for label, run in pairs:
        progress.start(label)
        samples[label] = run()
        progress.finish(f"{label}: median {summarize(samples[label])['median']:.3f} ms")
    base.delete("cc:blob", macs_key(DPID))
    return samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_convention_args(p)
    p.add_argument("--runs", type=int, help="timed calls per case (default 300; 50 with --quick)")
    args = p.parse_args()
    runs = args.runs or (50 if args.quick else 300)
    progress = Progress(NAME, 7)
    with tempfile.TemporaryDirectory(prefix="sdnmig-client-costs-") as state:
        bus = instances.ensure_bus(Path(state))
        try:
            samples = measure(bus, runs, progress)
        finally:
            instances.stop_bus(Path(state))
    summary = {k: summarize(v) for k, v in samples.items()}
    med = lambda k: round(summary[k]["median"], 3)  # noqa: E731
    headline = {"dump_1mb_ms_64k_reads": med("dump 64 KiB reads"),
                "dump_1mb_ms_1m_reads": med("dump 1 MiB reads"),
                "pubsub_1mb_ms_resp3": med("pubsub RESP3"), "pubsub_1mb_ms_resp2": med("pubsub RESP2"),
                "table_1000_ms_hgetall": med("table HGETALL"),
                "table_1000_ms_flattened": med("table flattened"),
                "sha256_1mb_ms": med("sha256 1 MB"), "runs": runs,
                "redis_py": redis.__version__}
    configurations = [{"name": k, "runs": runs, "bytes": MB, "hosts": HOSTS} for k in samples]
    doc = result_document(NAME, args.quick, configurations,
                          [{"case": k, "ms": v} for k, v in samples.items()], summary, headline)
    write_json(args.out / f"{NAME}.json", doc)
    plot_panels(args.out / f"{NAME}.png", [
        ("DUMP 1 MB", {k: samples[k] for k in ("dump 64 KiB reads", "dump 1 MiB reads")}, {}),
        ("1 MB pub/sub", {k: samples[k] for k in ("pubsub RESP3", "pubsub RESP2")}, {}),
        ("1000 hosts", {k: samples[k] for k in ("table HGETALL", "table flattened")}, {}),
        ("digest", {"sha256 1 MB": samples["sha256 1 MB"]}, {})],
        ylabel="ms per call", title=f"Redis client costs (redis-py {redis.__version__}, loopback)")
    print_headline(headline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
