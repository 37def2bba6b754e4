#!/usr/bin/env python3
"""lime: LIME's live switch migration on real OVS, against freeze-and-copy, plus the shim's cost.

(a) Loss. LimeTopo (h1-s1-s3-s2-h2, spare s3p linked to s1 and s2). h1 pings h2 with 64-byte
    packets every 1 ms while s3 is moved onto s3p, either by LIME (clone, then retire: both copies
    forward while the neighbours' links move, make before break) or by freeze-and-copy (s3 stops,
    its rules are copied to s3p, the neighbours switch over). Each run is a fresh controller and
    network; methods alternate. Per run: pings lost and duplicated, and the operation's duration
    as the shim reports it.
(b) Overhead. Packet-ins per second the learning app answers with and without the shim, 10
    emulated switches x 100 hosts (ofbench), one instance per switch, and with every switch
    cloned (experiments/lime_overhead.py).
(c) Ensemble. LimeEnsembleTopo (s1-s2-s3, four hosts, spares wired alike): the three switches
    cloned as one operation while h1->h4 and h2->h3 ping every 1 ms, each host moved to its
    spare (its second interface up with its rules before the first goes down) while another
    host pings it every 1 ms, then the old switches retired as one operation under pings.

Usage: .venv/bin/python experiments/lime.py [--quick] [--out DIR] [--parts abc] [--runs N]  (root)
Headline: {"lime_lost_max", "freeze_lost_mean", "shim_overhead_pct", "ensemble_switch_lost",
           "host_move_lost_max", "runs"}
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import common  # noqa: E402
from sdnmig import lime_lab  # noqa: E402

NAME = "lime"
PING_INTERVAL_S, LOSS_PINGS, LEAD_PINGS = (lime_lab.PING_INTERVAL_S, lime_lab.LOSS_PINGS,
                                           lime_lab.LEAD_PINGS)


# -- (b) ---------------------------------------------------------------------------------------------
def overhead(quick: bool, out_dir: Path) -> Optional[Dict[str, Any]]:
    from experiments import lime_overhead as lo
    result = lo.measure(quick, out_dir, repeats=1 if quick else lo.FULL_REPEATS)
    summary, headline = lo.summarise(result)
    return {"overhead_pct": headline["shim_overhead_pct"], "summary": summary,
            "headline": headline, "configuration": {"params": result["params"],
                                                    "configs": result["configs"]},
            "groups": {lo.LABELS.get(c, c): result["samples"][c] for c in result["configs"]},
            "runs": result["runs"]}


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_convention_args(p)
    p.add_argument("--parts", default="abc", help="which parts to run (default: abc)")
    p.add_argument("--runs", type=int, help="runs per method in (a) (default 20; 3 with --quick)")
    p.add_argument("--ensemble-runs", type=int, help="runs of (c) (default 5; 1 with --quick)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("lime: needs root (Open vSwitch, Mininet)", file=sys.stderr)
        return 2
    from mininet.log import setLogLevel
    setLogLevel("warning")
    runs_a = args.runs or (3 if args.quick else 20)
    runs_c = args.ensemble_runs or (1 if args.quick else 5)
    plan = ([("a", m) for _ in range(runs_a) for m in ("lime", "freeze")] if "a" in args.parts
            else []) + ([("c", "ensemble")] * runs_c if "c" in args.parts else [])
    progress = common.Progress(NAME, len(plan) + ("b" in args.parts))
    runs: List[Dict[str, Any]] = []
    for part, what in plan:
        progress.start(f"({part}) {what}")
        run = lime_lab.loss_run(what) if part == "a" else lime_lab.ensemble_run()
        runs.append({"part": part, **run})
        if part == "a":
            progress.finish(f"{what}: lost {run['lost']} of {run['sent']}, dup {run['dup']}, "
                            f"{run['op_ms']:.0f} ms")
        else:
            progress.finish(f"clone lost {run['clone']['lost']}, moves lost "
                            f"{[m['lost'] for m in run['moves']]}, retire lost "
                            f"{run['retire']['lost']}, {run['duration_ms']:.0f} ms")
    bench = None
    if "b" in args.parts:
        progress.start("(b) shim overhead (ofbench)")
        bench = overhead(args.quick, args.out)
        progress.finish(f"overhead {bench['overhead_pct']:.1f} %" if bench else "")
    return report(args, runs, bench, runs_a, runs_c, progress)


def report(args: argparse.Namespace, runs: List[Dict[str, Any]], bench: Optional[Dict[str, Any]],
           runs_a: int, runs_c: int, progress: common.Progress) -> int:
    a = {m: [r for r in runs if r["part"] == "a" and r["method"] == m] for m in ("lime", "freeze")}
    c = [r for r in runs if r["part"] == "c"]
    summary: Dict[str, Any] = {}
    for m, rs in a.items():
        if rs:
            summary[f"{m} lost"] = common.summarize(r["lost"] for r in rs)
            summary[f"{m} dup"] = common.summarize(r["dup"] for r in rs)
            summary[f"{m} op_ms"] = common.summarize(r["op_ms"] for r in rs)
    if c:
        summary["ensemble switch lost"] = common.summarize(
            r[k]["lost"] for r in c for k in ("clone", "retire"))
        summary["host move lost"] = common.summarize(m["lost"] for r in c for m in r["moves"])
        summary["ensemble duration_ms"] = common.summarize(r["duration_ms"] for r in c)
    if bench:
        summary["overhead"] = bench["summary"]
    headline = {
        "lime_lost_max": max((r["lost"] + r["dup"] for r in a["lime"]), default=None),
        "freeze_lost_mean": (round(summary["freeze lost"]["mean"], 1) if a["freeze"] else None),
        "shim_overhead_pct": round(bench["overhead_pct"], 2) if bench else None,
        "ensemble_switch_lost": (max(r[k]["lost"] + r[k]["dup"] for r in c
                                     for k in ("clone", "retire")) if c else None),
        "host_move_lost_max": max((m["lost"] for r in c for m in r["moves"]), default=None),
        "runs": len(a["lime"]),
    }
    configurations = [{"part": "a", "topology": "lime", "methods": ["lime", "freeze"],
                       "runs_per_method": runs_a, "ping_interval_s": PING_INTERVAL_S,
                       "ping_bytes": 64, "pings": LOSS_PINGS, "lead_pings": LEAD_PINGS},
                      {"part": "c", "topology": "limeensemble", "runs": runs_c,
                       "ping_interval_s": PING_INTERVAL_S}]
    if bench:
        configurations.append({"part": "b", **bench["configuration"]})
    doc = common.result_document(NAME, args.quick, configurations, runs, summary, headline,
                                 overhead=bench)
    out_json = common.write_json(args.out / f"{NAME}.json", doc)
    png = plot(args.out / f"{NAME}.png", a, c, bench)
    progress.note(f"wrote {out_json}" + (f" and {png}" if png else ""))
    common.print_headline(headline)
    ok = (headline["lime_lost_max"] in (None, 0) and headline["ensemble_switch_lost"] in (None, 0)
          and (headline["host_move_lost_max"] is None or headline["host_move_lost_max"] <= 1))
    return 0 if ok else 1


def plot(path: Path, a: Dict[str, List[Dict[str, Any]]], c: List[Dict[str, Any]],
         bench: Optional[Dict[str, Any]]) -> Optional[Path]:
    panels: List[common.Panel] = [
        ("(a) pings lost moving s3", {m: [r["lost"] for r in rs] for m, rs in a.items()},
         {"paper: freeze-and-copy 32": 32.0}),
        ("(a) operation ms", {m: [r["op_ms"] for r in rs] for m, rs in a.items()}, {})]
    if c:
        panels.append(("(c) ensemble lost", {
            "switches": [r[k]["lost"] for r in c for k in ("clone", "retire")],
            "per host move": [m["lost"] for r in c for m in r["moves"]]}, {}))
    if bench:
        panels.append(("(b) packet-ins/s", bench["groups"], {}))
    return common.plot_panels(path, panels, ylabel="", title="LIME on real OVS (1 ms pings)")


if __name__ == "__main__":
    sys.exit(main())
