"""`sudo make demo`: a scripted tour on a real Mininet network, with a printed summary and a plot.

First two controller instances (c1 MASTER of every switch, c2 SLAVE), the Redis-backed learning
app, a linear network of userspace OVS bridges, pings, and where the state ended up; then
ERC and Meta-Migration (`demo_meta`); then LIME (`demo_lime`); then a whole network moved by
Tunnel ALAP under TCP load (`demo_vnm`); then the control path of a sliced switch moved between
two hypervisor instances while the tenants ping (`demo_hv`). Later capabilities add their own
scripted step here.
Everything it starts it stops, also on errors.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import redis

from ryu_apps.learning.store import macs_key, stats_key
from sdnmig import lab, ovs
from sdnmig.demo_hv import hv_tour
from sdnmig.demo_lime import lime_tour
from sdnmig.demo_meta import meta_tour
from sdnmig.demo_vnm import vnm_tour
from sdnmig.errors import SdnmigError
from topologies.testbeds import LinearTopo


def _step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


def _rtts(out: str) -> List[float]:
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def learning_tour(out_dir: Path, switches: int = 3) -> Dict[str, Any]:
    total = 5
    summary: Dict[str, Any] = {}
    ctl = lab.Controllers(Path(tempfile.mkdtemp(prefix="sdnmig-demo-")))
    net = None
    try:
        t0 = time.monotonic()
        _step(1, total, "starting controller instances c1 and c2, each with its own Redis")
        c1, c2 = ctl.start(2)
        print(f"      c1 {c1.target} (master), c2 {c2.target} (slave)  "
              f"[{time.monotonic() - t0:.1f} s]")

        _step(2, total, f"starting Mininet: linear,{switches} on userspace Open vSwitch")
        topo = LinearTopo(k=switches, prefix="dm" + lab.unique_prefix()[2:])
        t1 = time.monotonic()
        net = lab.build_net(topo, [c1, c2])
        lab.disable_ipv6(net)
        bridges = topo.switches()
        lab.wait_roles(net, [c1, c2], {b: "c1" for b in bridges})
        print(f"      every switch: c1 MASTER, c2 SLAVE, confirmed by the switches  "
              f"[{time.monotonic() - t1:.1f} s]")

        _step(3, total, "pingall (the first packets are learnt through c1 and its Redis)")
        t2 = time.monotonic()
        loss = net.pingAll(timeout=1)
        summary["pingall_loss_pct"] = loss
        summary["pingall_s"] = round(time.monotonic() - t2, 2)

        _step(4, total, "50 pings h1 -> hN over installed flows")
        h1, hn = net.get(topo.prefix + "h1"), net.get(topo.prefix + f"h{switches}")
        out = h1.cmd(f"ping -n -c 50 -i 0.02 {hn.IP()}")
        rtts = _rtts(out)
        summary["ping_received"] = len(rtts)
        summary["ping_rtt_median_ms"] = round(statistics.median(rtts), 3) if rtts else None
        summary["ping_duplicates"] = out.count("DUP!")

        _step(5, total, "where the state is (roles as Open vSwitch's own database reports them)")
        lab.wait_ovs_roles([c1, c2], {b: "c1" for b in bridges})
        roles = lab.roles_now(bridges)
        per_switch = []
        for n, br in enumerate(bridges, start=1):
            row = {"switch": br, "master": [i.id for i in (c1, c2)
                                            if roles[br].get(i.target) == "master"]}
            for inst in (c1, c2):
                r = redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password)
                row[f"{inst.id}_hosts"] = r.hlen(macs_key(n))
                row[f"{inst.id}_packet_ins"] = int(r.hget(stats_key(n), "packet_in") or 0)
            per_switch.append(row)
        summary["switches"] = per_switch
        _print_summary(summary)
        _plot(summary, out_dir / "demo-learning.png")
        problems = ctl.close()
        ctl.started.clear()
        if problems:
            raise SdnmigError("a controller logged an exception: " + problems[0])
        return summary
    finally:
        if net is not None:
            net.stop()
        ctl.close()


def _print_summary(s: Dict[str, Any]) -> None:
    print()
    print(f"pingall loss {s['pingall_loss_pct']:.0f}% in {s['pingall_s']} s; "
          f"50 pings: {s['ping_received']} answered, {s['ping_duplicates']} duplicates, "
          f"median RTT {s['ping_rtt_median_ms']} ms")
    print(f"{'switch':10} {'master':7} {'c1 hosts':>9} {'c1 pkt-ins':>11} {'c2 hosts':>9} "
          f"{'c2 pkt-ins':>11}")
    for row in s["switches"]:
        print(f"{row['switch']:10} {','.join(row['master']) or 'NONE':7} {row['c1_hosts']:>9} "
              f"{row['c1_packet_ins']:>11} {row['c2_hosts']:>9} {row['c2_packet_ins']:>11}")
    print("(c2 is SLAVE: it answered no packet-in and holds no state; a migration moves it there)")


def _plot(s: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = s["switches"]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar([i - 0.2 for i in x], [r["c1_packet_ins"] for r in rows], 0.4, label="c1 (master)")
    ax.bar([i + 0.2 for i in x], [r["c2_packet_ins"] for r in rows], 0.4, label="c2 (slave)")
    ax.set_xticks(list(x), [r["switch"] for r in rows])
    ax.set_ylabel("packet-ins answered")
    ax.set_title("Who answered the switches' packet-ins")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(prog="sdnmig-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("results"), help="where plots go")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("sdnmig demo: needs root (Open vSwitch, Mininet): run 'sudo make demo'",
              file=sys.stderr)
        return 2
    try:
        ovs.vsctl("show")
        start = time.monotonic()
        print("== sdnmig demo: stateful learning switch, one master and one slave per switch ==")
        s = learning_tour(args.out)
        ok = s["pingall_loss_pct"] == 0 and s["ping_duplicates"] == 0
        print("\n== ERC and Meta-Migration: switches change controller while hosts ping ==")
        m = meta_tour(args.out)
        ok = ok and m["ok"]
        print("\n== LIME: a switch, then a whole network, moved to other switches while hosts ping ==")
        ok = lime_tour(args.out)["ok"] and ok
        print("\n== Tunnel ALAP: a whole network moved to another while h1 sends TCP to h2 ==")
        ok = vnm_tour(args.out)["ok"] and ok
        print("\n== Hypervisor: a sliced switch's control path moved between instances while "
              "tenants ping ==")
        ok = hv_tour(args.out)["ok"] and ok
        print(f"== demo {'passed' if ok else 'FAILED'} in {time.monotonic() - start:.1f} s ==")
        return 0 if ok else 1
    except SdnmigError as e:
        print(f"sdnmig demo: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
