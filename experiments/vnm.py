#!/usr/bin/env python3
"""vnm: whole-network migration (Tunnel ALAP, Tunnel ASAP) on real OVS, against no migration.

VnmTopo (old network o1..o4, new n1..n4, tunnel switch t0; h1 on o1/n1, h2 on o4/n4) with every
link, tunnel links included, capped at 24 Mbit/s (HTB; the paper's baseline throughput), and the
paper's control app flipping h1-h2's path between the upper and the lower path every second for
the whole run. Each run is a fresh controller and network; five phases of at least `--phase-s`
seconds each, timed from the answer of the command that opens them: before, prepare (tunnels),
first host moved (h1), both moved (h2), after finalize. A baseline run keeps the same schedule and
gives no command. Per configuration and repetition, two runs:

- TCP: iperf3 h1 -> h2, per-second throughput as the receiver counts it (the Fig. 6 trace);
  a phase's figure is the mean of the seconds wholly inside it.
- UDP + ping: iperf3 UDP h1 -> h2, 1,000 datagrams of 125 bytes a second for the whole run
  (5 phases + 3 s for the commands: 28 s and 28,000 datagrams at 5 s phases; the paper's D-ITG
  run was 25 s and ~25,000 packets), loss as the receiver counts it; beside it, h1 pings h2 every
  10 ms, RTTs split into before / during (prepare issued to finalize answered) / after.

Then, in the full run (`--uncapped` in a quick one), a TCP run of ALAP and of ASAP per repetition
with no link cap, where the datapath (one ovs-vswitchd thread forwarding for every bridge) is
the limit, as it likely was for the paper's 24 Mbit/s: there each tunnel crossing costs
throughput. With every link capped the tunnels share no bottleneck and cost none.

Usage: .venv/bin/python experiments/vnm.py [--quick] [--out DIR] [--runs N] [--phase-s S]  (root)
Headline: {"alap_tput_ratio_both_moved", "asap_tput_ratio_both_moved", "alap_udp_loss_pct",
           "asap_udp_loss_pct", "baseline_udp_loss_pct", "rtt_ratio_during"}
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import common  # noqa: E402
from sdnmig.vnm_phases import PHASES, WARMUP_S, phase_mbit  # noqa: E402

NAME = "vnm"
CONFIGS = ("baseline", "alap", "asap")
TRAFFIC = ("tcp", "udp")
PERIODS = ("before", "during", "after")
#: The paper's figures (Fig. 6, Table 1, the D-ITG run), for the plot and the JSON.
PAPER = {"baseline_mbit": 24.0, "one_moved_mbit": 18.0, "asap_both_moved_mbit": 16.0,
         "udp_loss_pct": {"asap": 0.44, "alap": 0.39},
         "rtt_ms": {"asap": {"before": 0.247, "during": 0.434},
                    "alap": {"before": 0.231, "during": 0.441}}}


def ratio(run: Dict[str, Any], phase: str) -> Optional[float]:
    now, before = phase_mbit(run, phase), phase_mbit(run, "before")
    return now / before if now is not None and before else None


def rtts(runs: Sequence[Dict[str, Any]], period: str, key: str = "period") -> List[float]:
    return [p["rtt_ms"] for r in runs for p in r.get("pings", []) if p[key] == period]


def median_or_none(xs: Sequence[Optional[float]]) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def rounded(x: Optional[float], digits: int = 4) -> Optional[float]:
    return None if x is None else round(x, digits)


def throughput(tcp: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Each phase's throughput (median over runs of the phase means) and its ratio to before."""
    return {"tcp_runs": len(tcp),
            "phase_mbit": {ph: rounded(median_or_none([phase_mbit(r, ph) for r in tcp]), 3)
                           for ph in PHASES},
            "phase_ratio": {ph: rounded(median_or_none([ratio(r, ph) for r in tcp]))
                            for ph in PHASES},
            "phase_ratio_per_run": {ph: [rounded(ratio(r, ph)) for r in tcp] for ph in PHASES}}


def summarise(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Per configuration, from the capped runs; `uncapped`: the same throughput figures from
    the runs without a link cap. A run that failed (it has an `error`) counts in `failed` only."""
    failed = [r for r in runs if "error" in r]
    runs = [r for r in runs if "error" not in r]
    capped = [r for r in runs if r.get("bw_mbit", 1)]
    out: Dict[str, Any] = {}
    for cfg in CONFIGS:
        tcp = [r for r in capped if r["algorithm"] == cfg and r["traffic"] == "tcp"]
        udp = [r for r in capped if r["algorithm"] == cfg and r["traffic"] == "udp"]
        if not (tcp or udp):
            continue
        packets = sum(r["udp"]["packets"] for r in udp)
        lost = sum(r["udp"]["lost"] for r in udp)
        out[cfg] = {
            **throughput(tcp), "udp_runs": len(udp),
            "retransmits": [r["retransmits"] for r in tcp],
            "udp_packets": packets, "udp_lost": lost,
            "udp_loss_pct": round(100.0 * lost / packets, 4) if packets else None,
            "udp_lost_per_run": [r["udp"]["lost"] for r in udp],
            "udp_out_of_order": sum(r["udp"]["out_of_order"] for r in udp),
            "rtt_ms": {p: common.summarize(rtts(udp, p)) for p in PERIODS},
            "phase_rtt_ms": {ph: median_or_none(rtts(udp, ph, "phase")) for ph in PHASES},
            "pings": {k: sum(r["ping"][k] for r in udp) for k in ("sent", "received", "dup")},
            "command_ms": {s["command"]: [x["ms"] for r in tcp + udp for x in r["steps"]
                                          if x["command"] == s["command"]]
                           for s in (tcp + udp)[0]["steps"]} if cfg != "baseline" else {},
        }
    free = {cfg: throughput([r for r in runs if not r.get("bw_mbit", 1)
                             and r["algorithm"] == cfg and r["traffic"] == "tcp"])
            for cfg in CONFIGS}
    free = {cfg: v for cfg, v in free.items() if v["tcp_runs"]}
    if free and capped:
        out["uncapped"] = free
    out["failed"] = [{k: r[k] for k in ("algorithm", "traffic", "bw_mbit", "error")}
                     for r in failed]
    return out


def headline_of(summary: Dict[str, Any]) -> Dict[str, Any]:
    def get(cfg: str, *path: str) -> Any:
        v: Any = summary.get(cfg)
        for k in path:
            v = v.get(k) if isinstance(v, dict) else None
        return v
    alap_rtt = get("alap", "rtt_ms")
    rtt_ratio = None
    if alap_rtt and alap_rtt["before"]["median"] and alap_rtt["during"]["median"] is not None:
        rtt_ratio = round(alap_rtt["during"]["median"] / alap_rtt["before"]["median"], 3)
    return {"alap_tput_ratio_both_moved": get("alap", "phase_ratio", "both moved"),
            "asap_tput_ratio_both_moved": get("asap", "phase_ratio", "both moved"),
            "alap_udp_loss_pct": get("alap", "udp_loss_pct"),
            "asap_udp_loss_pct": get("asap", "udp_loss_pct"),
            "baseline_udp_loss_pct": get("baseline", "udp_loss_pct"),
            "rtt_ratio_during": rtt_ratio}


def targets_met(summary: Dict[str, Any], h: Dict[str, Any]) -> Dict[str, Optional[bool]]:
    def ok(x: Any, test: Any) -> Optional[bool]:
        return None if x is None else bool(test(x))
    def asap_lower(part: Dict[str, Any]) -> Optional[bool]:
        """Every ASAP run below every ALAP run: lower beyond run-to-run noise."""
        if "alap" not in part or "asap" not in part:
            return None
        a, s = ([x for x in part[c]["phase_ratio_per_run"]["both moved"] if x is not None]
                for c in ("alap", "asap"))
        return max(s) < min(a) if a and s else None
    return {"alap_tput_ratio_both_moved >= 0.95": ok(h["alap_tput_ratio_both_moved"],
                                                      lambda x: x >= 0.95),
            "asap both moved lower than alap (every run)": asap_lower(summary),
            "asap both moved lower than alap, no link cap (every run)":
                asap_lower(summary.get("uncapped", {})),
            "alap_udp_loss_pct < 0.1": ok(h["alap_udp_loss_pct"], lambda x: x < 0.1),
            "asap_udp_loss_pct < 0.44": ok(h["asap_udp_loss_pct"], lambda x: x < 0.44),
            "rtt_ratio_during <= 2": ok(h["rtt_ratio_during"], lambda x: x <= 2)}


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_convention_args(p)
    p.add_argument("--runs", type=int, help="repetitions of each configuration (default 5; 1 with "
                                            "--quick)")
    p.add_argument("--phase-s", type=float, default=5.0, help="each phase's length, from its "
                                                              "command's answer (default 5)")
    p.add_argument("--bw", type=float, default=None, help="every link's cap, Mbit/s (default "
                   "24, the paper's; 0: none, the datapath is the limit)")
    p.add_argument("--uncapped", action=argparse.BooleanOptionalAction, default=None,
                   help="also run ALAP and ASAP (TCP) with no link cap (default: in a full run)")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"which to run, of {','.join(CONFIGS)} (default: all)")
    args = p.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    if any(c not in CONFIGS for c in configs) or args.phase_s < 5:
        p.error(f"--configs takes {','.join(CONFIGS)}; --phase-s is at least 5")
    if os.geteuid() != 0:
        print("vnm: needs root (Open vSwitch, Mininet)", file=sys.stderr)
        return 2
    from mininet.log import setLogLevel

    from sdnmig import vnm_lab
    setLogLevel("warning")
    reps = args.runs or (1 if args.quick else 5)
    bw = vnm_lab.BW_MBIT if args.bw is None else args.bw
    uncapped = (not args.quick if args.uncapped is None else args.uncapped) and bw > 0
    plan = [(c, t, bw) for _ in range(reps) for c in configs for t in TRAFFIC]
    plan += [(c, "tcp", 0.0) for _ in range(reps) for c in configs
             if uncapped and c != "baseline"]
    progress = common.Progress(NAME, len(plan))
    runs: List[Dict[str, Any]] = []
    for cfg, traffic, cap in plan:
        progress.start(f"{cfg} {traffic}" + ("" if cap else ", no link cap"))
        try:
            run = vnm_lab.migration_run(None if cfg == "baseline" else cfg, traffic,
                                        args.phase_s, bw=cap, log=progress.note)
        except (RuntimeError, AssertionError, OSError) as e:  # one run's, said and kept
            runs.append({"algorithm": cfg, "traffic": traffic, "bw_mbit": cap,
                         "error": f"{type(e).__name__}: {e}"})
            progress.finish(f"FAILED: {e}")
            continue
        runs.append(run)
        if traffic == "tcp":
            progress.finish("Mbit/s " + ", ".join(
                f"{ph} {phase_mbit(run, ph) or 0:.1f}" for ph in PHASES))
        else:
            progress.finish(f"UDP lost {run['udp']['lost']} of {run['udp']['packets']}; pings "
                            f"{run['ping']['received']}/{run['ping']['sent']}")
    summary = summarise(runs)
    headline = headline_of(summary)
    configurations = [{"config": c, "topology": "vnm", "bw_mbit": bw,
                       "phases": list(PHASES), "phase_s": args.phase_s,
                       "commands": list(vnm_lab.COMMANDS) if c != "baseline" else [],
                       "repetitions": reps, "tcp": "iperf3, receiver's per-second intervals",
                       "udp": {"rate": vnm_lab.UDP_RATE, "bytes": vnm_lab.UDP_BYTES},
                       "ping_interval_s": vnm_lab.PING_INTERVAL_S,
                       "warmup_s": WARMUP_S, "slack_s": vnm_lab.SLACK_S,
                       "control_app": "pathflip, 1 s period",
                       "uncapped_tcp_runs": reps if uncapped and c != "baseline" else 0}
                      for c in configs]
    doc = common.result_document(NAME, args.quick, configurations, runs, summary, headline,
                                 paper=PAPER, targets=targets_met(summary, headline))
    out_json = common.write_json(args.out / f"{NAME}.json", doc)
    png = plot(args.out / f"{NAME}.png", runs, summary, bw)
    progress.note(f"wrote {out_json}" + (f" and {png}" if png else ""))
    for name, met in doc["targets"].items():
        progress.note(f"target {name}: {'met' if met else 'NOT met' if met is False else 'n/a'}")
    for f in summary["failed"]:
        progress.note(f"failed run: {f['algorithm']} {f['traffic']}: {f['error']}")
    common.print_headline(headline)
    return 1 if summary["failed"] else 0


COLOURS = {"baseline": "tab:grey", "alap": "tab:blue", "asap": "tab:red"}


def plot(path: Path, runs: List[Dict[str, Any]], summary: Dict[str, Any], bw: float
         ) -> Optional[Path]:
    """The per-second throughput trace of each capped run (Fig. 6), commands marked; each phase's
    throughput per configuration; the same as a share of before in the runs with no link cap
    (if any); each phase's median RTT."""
    plt = common._pyplot()
    if plt is None:
        return None
    free = summary.get("uncapped", {})
    widths = [2.2, 1.4] + ([1.4] if free else []) + [1.2]
    fig, axes = plt.subplots(1, len(widths), figsize=(4 * len(widths) + 2, 4.6),
                             gridspec_kw={"width_ratios": widths})
    tcp = [r for r in runs if r["traffic"] == "tcp" and r.get("bw_mbit", 1)]
    top = max([iv["mbit"] for r in tcp for iv in r["intervals"]] + [PAPER["baseline_mbit"]])
    ax = axes[0]
    labelled = set()
    for r in tcp:
        cfg = r["algorithm"]
        whole = [iv for iv in r["intervals"] if iv["end"] - iv["start"] > 0.9]
        ax.plot([iv["end"] for iv in whole], [iv["mbit"] for iv in whole], color=COLOURS[cfg],
                linewidth=1.0, alpha=0.85, label=None if cfg in labelled else cfg)
        labelled.add(cfg)
    marked = next((r for r in tcp if r["algorithm"] != "baseline"), None)
    for s in (marked or {}).get("steps", []):
        ax.axvline(s["issued_s"], linestyle="--", linewidth=0.8, color="black")
        ax.annotate(s["command"], (s["issued_s"], 1.0), xycoords=("data", "axes fraction"),
                    xytext=(2, -2), textcoords="offset points", rotation=90, va="top",
                    fontsize=7)
    ax.axhline(PAPER["baseline_mbit"], linestyle=":", color="grey", linewidth=0.8)
    ax.set_xlabel("seconds since the traffic started")
    ax.set_ylabel("TCP throughput, Mbit/s (receiver, per second)")
    ax.set_ylim(0, top * 1.15)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("throughput trace (cf. the paper's Fig. 6)", fontsize=9)

    _phase_bars(axes[1], {c: summary[c]["phase_mbit"] for c in CONFIGS if c in summary},
                "Mbit/s (median over runs of the phase mean)", "throughput per phase")
    axes[1].set_ylim(0, top * 1.15)
    for label, y in (("paper: one moved", PAPER["one_moved_mbit"]),
                     ("paper: ASAP both moved", PAPER["asap_both_moved_mbit"])):
        axes[1].axhline(y, linestyle=":", color="grey", linewidth=0.8)
        axes[1].annotate(label, (0.0, y), xycoords=("axes fraction", "data"), fontsize=7,
                         color="grey", xytext=(2, 2), textcoords="offset points")
    if free:
        _phase_bars(axes[2], {c: v["phase_ratio"] for c, v in free.items()},
                    "share of the run's before phase", "no link cap: throughput per phase")
        axes[2].axhline(1.0, linestyle=":", color="grey", linewidth=0.8)
    _phase_bars(axes[-1], {c: summary[c]["phase_rtt_ms"] for c in CONFIGS if c in summary},
                "median ping RTT, ms (UDP runs)", "RTT per phase")
    cap = f"every link {bw:g} Mbit/s" if bw else "no link cap"
    return common._save(plt, fig, path, f"Whole-network migration on real OVS, {cap}, path "
                                        f"flipping every second")


def _phase_bars(ax: Any, values: Dict[str, Dict[str, Optional[float]]], ylabel: str,
                title: str) -> None:
    """One bar per configuration in each phase."""
    width = 0.8 / max(1, len(values))
    for k, (cfg, by_phase) in enumerate(values.items()):
        ax.bar([i + (k - (len(values) - 1) / 2) * width for i in range(len(PHASES))],
               [by_phase[ph] or 0 for ph in PHASES], width, color=COLOURS[cfg], label=cfg)
    ax.set_xticks(range(len(PHASES)))
    ax.set_xticklabels(PHASES, fontsize=8, rotation=20)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)


if __name__ == "__main__":
    sys.exit(main())
