"""The demo's Meta-Migration step: switches move between controllers while hosts ping through them.

Four controller instances (learning + ERC apps, each with its own Redis, all on one bus, found
by zeroconf); c1 masters every switch of a linear network. The learning app installs no flows
here, so every ping packet is a packet-in and a migration that lost or repeated one would show
as ping loss or DUP!. Three migrations run while h1 pings h3: Meta-Migration of s1 toward three
candidates (commit at phase 2), Meta of s2 (commit at phase 1, shared state transfer), Fixed ERC
of s3 toward one.
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from sdnmig import lab, ops
from sdnmig.errors import SdnmigError
from topologies.testbeds import LinearTopo

PLANS = [  # (switch, what, ops.migrate arguments)
    (1, "Meta, 3 candidates, commit phase 2", {"to": ["c2", "c3", "c4"], "commit": "phase2"}),
    (2, "Meta, 3 candidates, commit phase 1, shared transfer",
     {"to": ["c2", "c3", "c4"], "commit": "phase1", "transfer": "shared"}),
    (3, "Fixed ERC toward c4", {"fixed": "c4"}),
]


def _step(n: int, total: int, text: str) -> None:
    print(f"[{n}/{total}] {text}", flush=True)


def meta_tour(out_dir: Path) -> Dict[str, Any]:
    total = 5
    ctl = lab.Controllers(Path(tempfile.mkdtemp(prefix="sdnmig-demo-meta-")))
    net = None
    try:
        _step(1, total, "starting c1..c4 (learning + ERC), each with its own Redis, on one bus")
        insts = ctl.start(4, apps=("learning", "erc"), extra_conf={"install_flows": "false"})
        c1 = insts[0]
        peers = lab.poll(lambda: _peers(c1) if len(_peers(c1)) >= 3 else None, 20,
                         "zeroconf to find the other instances")
        print("      c1 discovered by zeroconf: " + ", ".join(
            f"{p['id']} (load {p['load']})" for p in sorted(peers.values(), key=lambda p: p["id"])))

        _step(2, total, "Mininet linear,3 on userspace Open vSwitch; c1 MASTER of every switch")
        topo = LinearTopo(k=3, prefix="dm" + lab.unique_prefix()[2:])
        net = lab.build_net(topo, insts)
        lab.disable_ipv6(net)
        lab.wait_roles(net, insts, {b: "c1" for b in topo.switches()})
        bus = ctl.bus.client()
        lab.poll(lambda: bus.hlen("ctl:master") >= 3, 10, "masters on the bus")

        _step(3, total, "h1 pings h3 every 10 ms (every packet a packet-in) during the migrations")
        h1, h3 = net.get(topo.prefix + "h1"), net.get(topo.prefix + "h3")
        h1.sendCmd(f"ping -n -c 400 -i 0.01 -W 2 {h3.IP()}")
        time.sleep(0.5)

        _step(4, total, "migrating")
        records = []
        for dpid, what, kw in PLANS:
            rec = ops.migrate(bus, dpid, **kw)
            records.append((what, rec))
            print(f"\n  s{dpid}: {what}")
            print("    " + ops.format_record(rec).replace("\n", "\n    "))
        out = h1.waitOutput()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        sent, received = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        dups = out.count("DUP!")

        _step(5, total, "after: who is master of what (controllers' confirmed view)")
        for inst in insts:
            roles = lab.controller_roles(inst)
            mastered = sorted(f"s{d}" for d, r in roles.items() if r == "MASTER")
            print(f"      {inst.id}: MASTER of {', '.join(mastered) or 'nothing'}")
        print(f"\nping during the migrations: {sent} sent, {received} received, {dups} duplicates")
        _plot(records, out_dir / "demo-meta.png")
        problems = ctl.close()
        ctl.started.clear()
        if problems:
            raise SdnmigError("a controller logged an exception: " + problems[0])
        ok = all(r["outcome"] == "committed" for _, r in records) and sent == received \
            and dups == 0
        return {"ok": ok, "sent": sent, "received": received, "duplicates": dups,
                "migrations": [r for _, r in records]}
    finally:
        if net is not None:
            net.stop()
        ctl.close()


def _peers(inst: Any) -> Dict[str, Dict[str, Any]]:
    import redis

    r = redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password)
    return {k.decode(): json.loads(v) for k, v in r.hgetall("ctl:peers").items()}


def _plot(records: List[Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    labels = []
    for i, (what, rec) in enumerate(records):
        left = 0.0
        for phase, color in (("phase1", "tab:blue"), ("phase2", "tab:orange"),
                             ("phase3", "tab:green")):
            v = (rec.get("phases_ms") or {}).get(phase) or 0.0
            ax.barh(i, v, left=left, color=color, label=phase if i == 0 else None)
            left += v
        labels.append(f"s{rec['dpid']} -> {rec['winner']}\n{what.split(',')[0]}")
    ax.set_yticks(range(len(records)), labels)
    ax.set_xlabel("ms")
    ax.set_title("Per-phase migration time (winner)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")
