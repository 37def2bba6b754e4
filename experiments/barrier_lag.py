"""How long after Open vSwitch answers a barrier it still forwards packets by the rule it replaced.

LIME's two-phase update (HotNets'12, sec. 4.1) takes a barrier reply after the first half to
mean that no packet meets the old rule on that switch any more. OVS changes its OpenFlow tables
before it answers the barrier, but a packet that hits a datapath flow cached from the old rule
keeps that flow's actions until a revalidator thread redoes the flow, which happens after the
reply, asynchronously. This experiment measures that window on this machine.

One userspace bridge, h1 sending UDP to h2 every `interval`, each packet stamped with the time it
was sent (sdnmig/dscp_echo.py send/record; the hosts share the clock). One rule marks the packets
with DSCP k (its version) and forwards them. Every 20-60 ms the rule is replaced by version k+1
with `ovs-ofctl add-flow`, which sends a barrier after the FLOW_MOD and returns once it is
answered. A packet is *stale* if it arrived with version d although it was sent after the
barrier of version d+1 was answered; its lag is how long after that answer it was sent (a lower
bound: the reply reached ovs-ofctl before ovs-ofctl returned).

    sudo .venv/bin/python experiments/barrier_lag.py [--quick] [--out DIR]

Configurations: the update direct or in LIME's two halves (stale counted from the first half's
barrier), the bridge idle or busy with a second stream through the same rule (a packet every
0.1 ms, or as fast as the sender goes). Last line: {"stale_packets", "updates_with_stale_pct", "lag_max_ms", "lag_p99_ms",
"updates"}.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import common  # noqa: E402

NAME = "barrier_lag"
PORT = 5400
INTERVAL_S = 0.0005
GAP_S = (0.02, 0.06)
MAX_UPDATES = 62  # versions 1..63: the DSCP field has 6 bits
OFCTL = ["ovs-ofctl", "-O", "OpenFlow13"]  # run directly, not SdnSwitch.ofctl (the node's shell
# would add its own delay to the time the barrier reply is taken at)
ECHO = str(Path(__file__).resolve().parent.parent / "sdnmig" / "dscp_echo.py")

Update = Tuple[int, float, float]  # version, ovs-ofctl started, ovs-ofctl returned (barrier answered)


def stale(packets: Sequence[Sequence[float]], updates: Sequence[Update]) -> List[Dict[str, float]]:
    """The packets that met version d although sent after version d+1's barrier was answered,
    each with its lag (ms after that answer). `packets`: [seq, sent, received, DSCP]."""
    answered = {v: done for v, _, done in updates}
    found = []
    for seq, sent, _, dscp in packets:
        done = answered.get(int(dscp) + 1)
        if done is not None and sent > done:
            found.append({"seq": int(seq), "version": int(dscp), "lag_ms": (sent - done) * 1e3})
    return found


def _rule(in_port: int, out_port: int, version: int) -> str:
    return f"priority=100,udp,in_port={in_port},actions=set_field:{version}->ip_dscp,output:{out_port}"


def _first_half(in_port: int) -> str:
    return f"priority=100,udp,in_port={in_port},actions=controller"


def one_run(updates: int, rng: random.Random, two_phase: bool,
            load_interval: float = 0.0) -> Dict[str, Any]:
    """A fresh bridge and hosts, `updates` rule versions under a stamped stream. `two_phase`: as
    LIME updates a rule, first the match sending to the controller (none is connected: those
    packets are dropped), its barrier (the time that counts), then the new version.
    `load_interval`: a second stream, h1 to h2 on another port (no one listens) through the same
    rule, one packet per `load_interval` (as fast as it goes if the sender cannot keep up),
    keeps the switch busy."""
    from sdnmig import lab
    from topologies.testbeds import LinearTopo
    topo = LinearTopo(k=1, n=2, prefix=lab.unique_prefix())
    net = lab.build_net(topo, [])
    tmp = Path(tempfile.mkdtemp(prefix="barrier_lag."))
    procs: List[Any] = []
    try:
        net.staticArp()
        (h1, h2), sw = net.hosts, net.switches[0]
        p1, p2 = (sw.ports[h.connectionsTo(sw)[0][1]] for h in (h1, h2))
        seconds = updates * sum(GAP_S) / 2 + 3.0
        subprocess.run(OFCTL + ["add-flow", sw.name, _rule(p1, p2, 1)], check=True)
        recorder = h2.popen([sys.executable, ECHO, "record", str(PORT), "--seconds",
                             str(seconds + 1.0), "--out", str(tmp / "got.json")])
        procs.append(recorder)
        lab.poll(lambda: f":{PORT}" in h2.cmd(f"ss -Hlun sport = :{PORT}"), 10, "the recorder")
        senders = [h1.popen([sys.executable, ECHO, "send", h2.IP(), str(PORT), "--count",
                             str(int(seconds / INTERVAL_S)), "--interval", str(INTERVAL_S)])]
        if load_interval:  # (it meets the same rule: the same datapath flow, busier)
            senders.append(h1.popen([sys.executable, ECHO, "send", h2.IP(), str(PORT + 1),
                                     "--count", str(int(seconds / load_interval)),
                                     "--interval", str(load_interval)]))
        procs += senders
        time.sleep(0.5)  # the stream's datapath flow exists (what the experiment is about)
        done: List[Update] = []
        for version in range(2, updates + 2):
            started = time.time()
            if two_phase:
                subprocess.run(OFCTL + ["add-flow", sw.name, _first_half(p1)], check=True)
                done.append((version, started, time.time()))
            subprocess.run(OFCTL + ["add-flow", sw.name, _rule(p1, p2, version)], check=True)
            if not two_phase:
                done.append((version, started, time.time()))
            time.sleep(rng.uniform(*GAP_S))
        for sender in senders:
            sender.wait(timeout=seconds + 30)
        recorder.wait(timeout=30)
        packets = json.loads((tmp / "got.json").read_text())
    finally:
        for proc in procs:  # ours, still running only if the run failed
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        net.stop()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    late = stale(packets, done)
    per_update: Dict[int, List[float]] = {}
    for s in late:
        per_update.setdefault(s["version"] + 1, []).append(s["lag_ms"])
    return {"updates": len(done), "packets": len(packets), "stale": late,
            "updates_with_stale": len(per_update),
            "max_lag_ms_per_update": {str(v): max(ls) for v, ls in per_update.items()},
            "ofctl_ms": [(d - s) * 1e3 for _, s, d in done]}


STYLES = ("direct", "two-phase")
LOADS = {"idle": 0.0, "busy": 0.0001}  # busy: a second stream, a packet every 0.1 ms (or as fast
# as the sender goes), through the same bridge
CONFIGS = [(st, ld) for ld in LOADS for st in STYLES]


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_convention_args(p)
    p.add_argument("--runs", type=int, help="runs per configuration (default 8; 2 with --quick)")
    p.add_argument("--updates", type=int,
                   help=f"rule versions per run, at most {MAX_UPDATES} (default 60; 40 quick)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print(f"{NAME}: needs root (Open vSwitch, Mininet)", file=sys.stderr)
        return 2
    from mininet.log import setLogLevel
    setLogLevel("warning")
    runs_n = args.runs or (2 if args.quick else 8)
    updates = args.updates or (40 if args.quick else 60)
    if not 1 <= updates <= MAX_UPDATES:
        p.error(f"--updates must be between 1 and {MAX_UPDATES} (the DSCP has 6 bits)")
    rng = random.Random(args.seed)
    progress = common.Progress(NAME, runs_n * len(CONFIGS))
    runs = []
    for _ in range(runs_n):
        for style, load in CONFIGS:  # interleaved: a slow moment of the machine hits all
            progress.start(f"{style}, {load}, {updates} updates")
            run = {"style": style, "load": load,
                   **one_run(updates, rng, style == "two-phase", LOADS[load])}
            runs.append(run)
            progress.finish(f"{len(run['stale'])} stale packets after {run['updates_with_stale']}"
                            f" of {run['updates']} barriers")
    names = [f"{st}, {ld}" for st, ld in CONFIGS]
    lags = {f"{st}, {ld}": sorted(s["lag_ms"] for r in runs if (r["style"], r["load"]) == (st, ld)
                                  for s in r["stale"]) for st, ld in CONFIGS}
    every = sorted(x for ls in lags.values() for x in ls)
    n_updates = sum(r["updates"] for r in runs)
    summary: Dict[str, Any] = {}
    for name, (st, ld) in zip(names, CONFIGS):
        mine = [r for r in runs if (r["style"], r["load"]) == (st, ld)]
        summary[name] = {"lag_ms": common.summarize(lags[name]),
                         "stale_packets": len(lags[name]),
                         "updates_with_stale": sum(r["updates_with_stale"] for r in mine),
                         "updates": sum(r["updates"] for r in mine),
                         "packets": sum(r["packets"] for r in mine)}
    summary["ofctl_ms"] = common.summarize(x for r in runs for x in r["ofctl_ms"])
    headline = {
        "stale_packets": len(every),
        "updates_with_stale_pct": round(100.0 * sum(r["updates_with_stale"] for r in runs)
                                        / max(n_updates, 1), 1),
        "lag_max_ms": round(every[-1], 2) if every else 0.0,
        "lag_p99_ms": round(common.percentile(every, 99), 2) if every else 0.0,
        "updates": n_updates,
    }
    configurations = [{"style": st, "load": ld, "load_interval_s": LOADS[ld],
                       "bridge": "userspace (netdev)", "interval_s": INTERVAL_S,
                       "gap_s": list(GAP_S), "updates_per_run": updates, "runs": runs_n,
                       "seed": args.seed} for st, ld in CONFIGS]
    doc = common.result_document(NAME, args.quick, configurations, runs, summary, headline)
    out_json = common.write_json(args.out / f"{NAME}.json", doc)
    png = plot(args.out / f"{NAME}.png", runs)
    progress.note(f"wrote {out_json}" + (f" and {png}" if png else ""))
    common.print_headline(headline)
    return 0


def plot(path: Path, runs: Sequence[Dict[str, Any]]) -> Any:
    """Stale packets' lags (in microseconds: they are well under a millisecond when the bridge
    is alone) per configuration, and how long ovs-ofctl took."""
    lags = {f"{st}, {ld}": [s["lag_ms"] * 1e3 for r in runs if (r["style"], r["load"]) == (st, ld)
                            for s in r["stale"]] for st, ld in CONFIGS}
    return common.plot_panels(path, [
        ("stale packets: \u00b5s sent after the barrier reply", lags, {}),
        ("ovs-ofctl add-flow + barrier (ms)",
         {ld: [x for r in runs if r["load"] == ld for x in r["ofctl_ms"]] for ld in LOADS}, {})],
        ylabel="", title="OVS: an old rule's actions after the barrier reply")


if __name__ == "__main__":
    sys.exit(main())
