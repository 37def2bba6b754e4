#!/usr/bin/env python3
"""meta_tail: what the slow tail of a Meta-Migration configuration is made of. No root, no testbed.

Reads the results of experiments/meta_migration.py (default results/meta_migration.json) and, per
configuration (default: the headline's four), prints the median and 99th percentile of the
migration time and of the time to the end of the winner's drain, then the slowest 1 % of runs:
who won them (with that candidate's imposed load), in how many a glitch paused the run's
least-loaded candidate, and the median marks (ms from START) of those runs: the winner chosen,
the switch's ROLE_STATUS to the old master, END_MIGRATION, DRAINED.

The headline's p99 ratio obeys a bound worth seeing in numbers: when the low-load candidate is
paused, Meta-Migration finishes with a high-load one, so Meta's p99 sits near Fixed-high's
median, while Fixed-random's p99 is a high-load candidate plus a glitch. The last line puts
those three figures side by side.

Usage: .venv/bin/python experiments/meta_tail.py [RESULTS.json] [--configs NAME ...] [--share F]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import meta_analysis as analysis  # noqa: E402
from experiments import meta_plan as plan  # noqa: E402

MARKS = ("decide", "switched", "end", "drained")  # the initiator's marks


def _median(xs: Sequence[float]) -> Optional[float]:
    return round(float(statistics.median(xs)), 3) if xs else None


def tail_facts(runs: Sequence[Mapping[str, Any]], config: str, share: float = 0.01) -> Dict[str, Any]:
    """The slowest `share` of the configuration's measured runs (at least one), described."""
    rs = sorted(analysis.measured(runs, config), key=lambda r: float(r["total_ms"]))
    if not rs:
        return {"n": 0}
    tail = rs[-max(1, int(round(len(rs) * share))):]
    winners: Dict[str, int] = {}
    paused = 0
    marks: Dict[str, List[float]] = {m: [] for m in MARKS}
    for r in tail:
        loads = r.get("loads") or {}
        w = r.get("winner") or "none"
        key = f"{w} ({loads[w]:.0%})" if w in loads else w
        winners[key] = winners.get(key, 0) + 1
        cands = r.get("candidates") or []
        low = min((loads.get(c, 0.0) for c in cands), default=0.0)
        if any(g.get("fired") and loads.get(c, 0.0) == low
               for c, g in (r.get("glitches") or {}).items()):
            paused += 1
        got = ((r.get("record") or {}).get("marks_ms") or {})
        for m in MARKS:
            if isinstance(got.get(m), (int, float)):
                marks[m].append(float(got[m]))
    times = analysis.times_ms(runs, config)
    drained = analysis.drained_ms(runs, config)
    return {"n": len(rs), "p50_ms": analysis.rounded(analysis.pct(times, 50)),
            "p99_ms": analysis.rounded(analysis.pct(times, 99)),
            "drained_p50_ms": analysis.rounded(analysis.pct(drained, 50)),
            "drained_p99_ms": analysis.rounded(analysis.pct(drained, 99)),
            "tail_runs": len(tail), "tail_from_ms": round(float(tail[0]["total_ms"]), 3),
            "tail_winners": winners, "tail_least_loaded_paused": paused,
            "tail_median_marks_ms": {m: _median(v) for m, v in marks.items()}}


def bound(runs: Sequence[Mapping[str, Any]]) -> Dict[str, Optional[float]]:
    """Meta's p99 and Fixed-random's p99 against Fixed-high's median (the headline's loads)."""
    high = analysis.times_ms(runs, f"fixed-high {plan.HEAD_PAIR}")
    return {"meta3_p99_ms": analysis.rounded(analysis.pct(analysis.times_ms(runs, plan.HEAD_META), 99)),
            "fixed_high_p50_ms": analysis.rounded(analysis.pct(high, 50)),
            "fixed_random_p99_ms": analysis.rounded(analysis.pct(
                analysis.times_ms(runs, plan.HEAD_FIXED_RANDOM), 99))}


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="?", default="results/meta_migration.json")
    p.add_argument("--configs", nargs="*", default=[plan.HEAD_FIXED_LOW, f"fixed-high {plan.HEAD_PAIR}",
                                                    plan.HEAD_FIXED_RANDOM, plan.HEAD_META])
    p.add_argument("--share", type=float, default=0.01, help="the tail's share of the runs")
    args = p.parse_args(argv)
    try:
        doc = json.loads(Path(args.results).read_text())
    except (OSError, ValueError) as e:
        print(f"meta_tail: cannot read {args.results}: {e}", file=sys.stderr)
        return 2
    runs = doc.get("runs") or []
    for name in args.configs:
        print(f"{name}: {json.dumps(tail_facts(runs, name, args.share))}")
    print(json.dumps(bound(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
