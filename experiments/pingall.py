#!/usr/bin/env python3
"""pingall: how long a full pingall takes through the Redis-backed learning app, on real OVS.

Each run starts a fresh controller instance (os-ken, its own Redis), a fresh Mininet network on
userspace OVS, waits until the switches confirmed the instance as MASTER, then times two pingalls:
the *cold* one (every ARP and first ICMP packet goes through the controller, which learns and
commits to Redis before it answers) and the *warm* one (over the flows the first installed).
Topologies: linear,4 (one host per switch) and tree depth 2 fanout 3.

Usage: .venv/bin/python experiments/pingall.py [--quick] [--out DIR]     (root)
Headline: {"linear4_cold_pingall_s": .., "linear4_warm_pingall_s": .., "tree23_cold_pingall_s": ..}
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import common  # noqa: E402
from sdnmig import lab  # noqa: E402
from topologies.testbeds import LinearTopo, TreeTopo  # noqa: E402

NAME = "pingall"
TOPOS = {"linear4": (LinearTopo, {"k": 4}), "tree23": (TreeTopo, {"depth": 2, "fanout": 3})}


def run_once(topo_name: str) -> Dict[str, Any]:
    cls, kw = TOPOS[topo_name]
    ctl = lab.Controllers(Path(tempfile.mkdtemp(prefix="sdnmig-pingall-")))
    net = None
    try:
        (c1,) = ctl.start(1)
        topo = cls(prefix=lab.unique_prefix(), **kw)
        net = lab.build_net(topo, [c1])
        lab.disable_ipv6(net)
        lab.wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
        timings = {}
        for phase in ("cold", "warm"):
            t = time.monotonic()
            loss = net.pingAll(timeout=1)
            timings[phase] = {"seconds": time.monotonic() - t, "loss_pct": loss}
        return {"topology": topo_name, "hosts": len(topo.hosts()), **timings}
    finally:
        if net is not None:
            net.stop()
        problems = ctl.close()
        if problems:
            raise RuntimeError(f"controller logged an exception: {problems[0]}")


def main(argv: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_convention_args(parser)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("pingall: needs root (Open vSwitch, Mininet)", file=sys.stderr)
        return 2
    from mininet.log import setLogLevel

    setLogLevel("warning")
    repeats = 3 if args.quick else 10
    plan = [(rep, t) for rep in range(repeats) for t in TOPOS]
    progress = common.Progress(NAME, len(plan))
    runs: List[Dict[str, Any]] = []
    for rep, topo_name in plan:
        progress.start(f"{topo_name}, run {rep + 1}/{repeats}")
        run = run_once(topo_name)
        run["repeat"] = rep
        runs.append(run)
        progress.finish(f"cold {run['cold']['seconds']:.3f} s ({run['cold']['loss_pct']:.0f}% loss),"
                        f" warm {run['warm']['seconds']:.3f} s")
    groups = {f"{t} {ph}": [r[ph]["seconds"] for r in runs if r["topology"] == t]
              for t in TOPOS for ph in ("cold", "warm")}
    summary = {k: common.summarize(v) for k, v in groups.items()}
    summary["loss_pct_max"] = max(r[ph]["loss_pct"] for r in runs for ph in ("cold", "warm"))
    headline = {"linear4_cold_pingall_s": round(summary["linear4 cold"]["median"], 3),
                "linear4_warm_pingall_s": round(summary["linear4 warm"]["median"], 3),
                "tree23_cold_pingall_s": round(summary["tree23 cold"]["median"], 3),
                "loss_pct_max": summary["loss_pct_max"]}
    configurations = [{"topology": t, "params": kw, "platform": "os_ken", "repeats": repeats,
                       "ping_timeout_s": 1} for t, (_, kw) in TOPOS.items()]
    out_json = common.write_json(args.out / f"{NAME}.json", common.result_document(
        NAME, args.quick, configurations, runs, summary, headline))
    png = common.plot_samples(args.out / f"{NAME}.png", groups, ylabel="seconds",
                              title="pingall through the Redis-backed learning app (os-ken)")
    progress.note(f"wrote {out_json}" + (f" and {png}" if png else ""))
    common.print_headline(headline)
    return 0 if summary["loss_pct_max"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
