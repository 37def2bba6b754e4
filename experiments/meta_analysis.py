"""From the raw per-run samples of the Meta-Migration experiment to its figures, Table I and
headline. No I/O; every number in the results is computed here from `runs`.

A run (see experiments/meta_migration.py) holds `config`, `warmup`, `total_ms` (the migration's
own total, or the timeout for a run that did not commit: it counts in the CDF at its timeout),
`drain_ms` (the winner answering its buffer after END_MIGRATION; None if not committed),
`window_s` (the measured interval), per-controller `cpu_ns`, `tcp` ({sent, received}) and `io`
({rchar, wchar}: not network bytes, see meta_migration.COUNTERS), per-Redis
`redis` ({in, out}; keys c1..c4 and "bus"), `initiator`, `candidates`, `winner`, and for overhead
configurations `idle` (the same measurements over a no-migration window of the same length).
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from experiments.common import percentile
from experiments import meta_plan as plan

ROLES = ("not active", "initial master", "new master", "non winner")


def measured(runs: Iterable[Mapping[str, Any]], config: str) -> List[Mapping[str, Any]]:
    return [r for r in runs if r["config"] == config and not r.get("warmup")]


def times_ms(runs: Iterable[Mapping[str, Any]], config: str) -> List[float]:
    return [float(r["total_ms"]) for r in measured(runs, config)]


def drained_ms(runs: Iterable[Mapping[str, Any]], config: str) -> List[float]:
    """START to the end of the winner's drain: the switch's whole blackout."""
    return [float(r["total_ms"]) + float(r.get("drain_ms") or 0.0) for r in measured(runs, config)]


def pct(xs: Sequence[float], p: float) -> Optional[float]:
    return percentile(sorted(xs), p) if xs else None


def median(xs: Sequence[float]) -> Optional[float]:
    return float(statistics.median(xs)) if xs else None


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b == 0:
        return None
    return a / b


def rounded(x: Optional[float], digits: int = 3) -> Optional[float]:
    return None if x is None else round(x, digits)


def roles(run: Mapping[str, Any], controllers: Sequence[str] = plan.CONTROLLERS) -> Dict[str, str]:
    """Each controller's part in the run's migration."""
    init = run.get("initiator") or plan.INITIAL
    cands = set(run.get("candidates") or ())
    winner = run.get("winner")
    out = {}
    for c in controllers:
        if c == init:
            out[c] = "initial master"
        elif c == winner:
            out[c] = "new master"
        elif c in cands:
            out[c] = "non winner"
        else:
            out[c] = "not active"
    return out


def cpu_pct(sample: Mapping[str, Any], who: str) -> Optional[float]:
    """CPU of `who` over the sample's window, in percent of one core."""
    ns = (sample.get("cpu_ns") or {}).get(who)
    wall = sample.get("window_s")
    if ns is None or not wall:
        return None
    return 100.0 * ns / (wall * 1e9)


def sent_received(sample: Mapping[str, Any], who: str) -> Dict[str, Optional[int]]:
    """Controller process TCP bytes (sent, received) and its Redis's (net output, net input)."""
    tcp = (sample.get("tcp") or {}).get(who) or {}
    red = (sample.get("redis") or {}).get(who) or {}
    return {"ctl_sent": tcp.get("sent"), "ctl_recv": tcp.get("received"),
            "redis_sent": red.get("out"), "redis_recv": red.get("in")}


def source_bytes(sample: Mapping[str, Any], who: str = plan.INITIAL) -> Optional[int]:
    """What the initial master sent: its controller's TCP bytes plus its Redis's output bytes."""
    s = sent_received(sample, who)
    if s["ctl_sent"] is None or s["redis_sent"] is None:
        return None
    return s["ctl_sent"] + s["redis_sent"]


def idle_samples(runs: Iterable[Mapping[str, Any]], transfer: str = "copy") -> List[Mapping[str, Any]]:
    """The no-migration windows measured after the overhead runs of one transfer mode."""
    names = {plan.overhead_name(transfer, k) for k in (1, 2, 3)}
    return [r["idle"] for r in runs if r["config"] in names and not r.get("warmup") and r.get("idle")]


def cpu_groups(runs: Sequence[Mapping[str, Any]]) -> Dict[str, List[float]]:
    """Fig. 9: CPU % per role, per candidate count (copy transfer), and with no migration."""
    out: Dict[str, List[float]] = {}
    for idle in idle_samples(runs):
        x = cpu_pct(idle, plan.INITIAL)
        if x is not None:
            out.setdefault("initial master, no migration", []).append(x)
    for k in (1, 2, 3):
        for r in measured(runs, plan.overhead_name("copy", k)):
            for who, role in roles(r).items():
                x = cpu_pct(r, who)
                if x is not None and role in ("initial master", "new master"):
                    out.setdefault(f"{role}, k={k}", []).append(x)
    return out


def _cell(samples: Sequence[Mapping[str, Any]], pick: Any) -> Dict[str, Optional[float]]:
    vals: Dict[str, List[float]] = {}
    for s in samples:
        for who in pick(s):
            for name, v in sent_received(s, who).items():
                if v is not None:
                    vals.setdefault(name, []).append(float(v))
    return {name: median(vals.get(name, [])) for name in
            ("ctl_sent", "ctl_recv", "redis_sent", "redis_recv")}


def table1(runs: Sequence[Mapping[str, Any]], transfer: str = "copy") -> Dict[str, Dict[str, Any]]:
    """Table I: median bytes sent/received per role; rows 'No Mig.' and 1..3 candidates."""
    idle = idle_samples(runs, transfer)
    table: Dict[str, Dict[str, Any]] = {"No Mig.": {
        "initial master": _cell(idle, lambda s: [plan.INITIAL]),
        "not active": _cell(idle, lambda s: list(plan.CANDIDATES))}}
    for k in (1, 2, 3):
        rs = measured(runs, plan.overhead_name(transfer, k))
        table[str(k)] = {role: _cell(rs, lambda s, role=role: [w for w, x in roles(s).items()
                                                               if x == role])
                         for role in ROLES}
    return table


def format_table1(table: Mapping[str, Mapping[str, Mapping[str, Optional[float]]]],
                  title: str) -> List[str]:
    """Text lines: each cell 'sent / received' of the controller process, then of its Redis."""

    def kb(x: Optional[float]) -> str:
        if x is None:
            return "-"
        return f"{x / 1e6:.2f}MB" if x >= 1e6 else f"{x / 1e3:.0f}KB"

    lines = [title, f"{'dest. count':<18}" + "".join(f"{r:>24}" for r in ROLES)]
    for row, cells in table.items():
        for part, label in (("ctl", "controller"), ("redis", "its Redis")):
            text = []
            for role in ROLES:
                c = cells.get(role) or {}
                s, r = c.get(f"{part}_sent"), c.get(f"{part}_recv")
                text.append("-" if s is None and r is None else f"{kb(s)} / {kb(r)}")
            head = row if part == "ctl" else ""
            lines.append(f"{head:<6}{label:<12}" + "".join(f"{t:>24}" for t in text))
    return lines


def config_summary(runs: Sequence[Mapping[str, Any]], config: str) -> Dict[str, Any]:
    rs = measured(runs, config)
    xs = [float(r["total_ms"]) for r in rs]
    ds = drained_ms(runs, config)
    outcomes: Dict[str, int] = {}
    for r in rs:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    winners: Dict[str, int] = {}
    for r in rs:
        if r.get("winner"):
            winners[r["winner"]] = winners.get(r["winner"], 0) + 1
    return {"n": len(rs), "p10_ms": rounded(pct(xs, 10)), "p50_ms": rounded(pct(xs, 50)),
            "p90_ms": rounded(pct(xs, 90)), "p99_ms": rounded(pct(xs, 99)),
            "mean_ms": rounded(statistics.fmean(xs)) if xs else None,
            "drained_p50_ms": rounded(pct(ds, 50)), "drained_p99_ms": rounded(pct(ds, 99)),
            "timed_out": sum(1 for r in rs if r.get("timed_out")), "outcomes": outcomes,
            "winners": winners,
            "glitches_fired": sum(1 for r in rs for g in (r.get("glitches") or {}).values()
                                  if g.get("fired"))}


def drained_ratios(runs: Sequence[Mapping[str, Any]]) -> Dict[str, Optional[float]]:
    """The headline's two time ratios, with each run's time taken to the end of its drain."""
    meta, rand, low = (drained_ms(runs, n) for n in
                       (plan.HEAD_META, plan.HEAD_FIXED_RANDOM, plan.HEAD_FIXED_LOW))
    return {"p99_ratio_meta3_vs_fixed_random": rounded(ratio(pct(meta, 99), pct(rand, 99))),
            "p50_ratio_meta3_vs_fixed_low": rounded(ratio(pct(meta, 50), pct(low, 50))),
            "fixed_p50_ms": rounded(pct(drained_ms(runs, plan.HEAD_CLEAN), 50), 1)}


def headline(runs: Sequence[Mapping[str, Any]], runs_per_config: int) -> Dict[str, Any]:
    meta, rand, low = (times_ms(runs, n) for n in
                       (plan.HEAD_META, plan.HEAD_FIXED_RANDOM, plan.HEAD_FIXED_LOW))
    k3 = [cpu_pct(r, plan.INITIAL) for r in measured(runs, plan.overhead_name("copy", 3))]
    idle = [cpu_pct(s, plan.INITIAL) for s in idle_samples(runs)]
    shared = {k: [source_bytes(r) for r in measured(runs, plan.overhead_name("shared", k))]
              for k in (1, 3)}
    clean = times_ms(runs, plan.HEAD_CLEAN)
    return {
        "p99_ratio_meta3_vs_fixed_random": rounded(ratio(pct(meta, 99), pct(rand, 99))),
        "p50_ratio_meta3_vs_fixed_low": rounded(ratio(pct(meta, 50), pct(low, 50))),
        "cpu_ratio_master_k3_vs_idle": rounded(ratio(
            median([x for x in k3 if x is not None]), median([x for x in idle if x is not None]))),
        "source_bytes_ratio_shared_k3_vs_k1": rounded(ratio(
            median([x for x in shared[3] if x is not None]),
            median([x for x in shared[1] if x is not None]))),
        "fixed_p50_ms": rounded(pct(clean, 50), 1),
        "runs_per_config": runs_per_config,
    }
