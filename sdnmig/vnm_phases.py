"""The phases of a whole-network migration run (sdnmig.vnm_lab.migration_run), and the raw samples
of one run tagged with them. Pure: the iperf3 JSON and ping output come in as they are, so the
unit tests check the bookkeeping that experiments/vnm.py and the demo report from.

A phase opens when its command answered (the first at WARMUP_S for throughput: TCP's slow start
is no phase's) and closes when the next command is issued; a sample taken while a command ran is
in the trace but in no phase. For RTTs the run is cut coarser: before (until prepare is issued),
during, and after (once finalize answered).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

PHASES = ("before", "prepare", "first moved", "both moved", "finalized")
COMMANDS = ("prepare", "migrate h1", "migrate h2", "finalize")  # each opens the next phase
WARMUP_S = 1.0


PING_LINE = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+) .*time=([\d.]+) ms", re.M)
PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?")


def ping_samples(out: str) -> List[Tuple[float, int, float]]:
    """(wall time, sequence number, RTT ms) of every answered echo, from `ping -D` output."""
    return [(float(t), int(q), float(r)) for t, q, r in PING_LINE.findall(out)]


def summarise_run(algorithm: Optional[str], traffic: str, phase_s: float, t0: float,
                  steps: List[Dict[str, Any]], sent: Dict[str, Any], received: Dict[str, Any],
                  ping_out: str, offset: float = 0.0) -> Dict[str, Any]:
    """The raw samples of a run, each tagged with its phase (a sample taken while a command ran
    belongs to no phase: it is in the trace, not in a phase's figures). Throughput is what the
    receiver got each second (the sender's figures step by its 128 KiB writes); iperf3 counts
    from its test's start, `offset` s after t0."""
    intervals = []
    for i in received["intervals"]:
        s = i["sum"]
        iv = {"start": round(s["start"] + offset, 3), "end": round(s["end"] + offset, 3),
              "mbit": round(s["bits_per_second"] / 1e6, 3)}
        if traffic == "udp":
            iv.update(packets=s.get("packets"), lost=s.get("lost_packets"))
        # the receiver's last interval is what remained of a second: no phase's
        whole = iv["end"] - iv["start"] > 0.9
        iv["phase"] = phase_of(steps, iv["start"], iv["end"], WARMUP_S) if whole else None
        intervals.append(iv)
    run: Dict[str, Any] = {"algorithm": algorithm or "baseline", "traffic": traffic,
                           "phase_s": phase_s, "steps": steps, "iperf_offset_s": round(offset, 3),
                           "intervals": intervals}
    if traffic == "tcp":
        run["retransmits"] = sent["end"]["sum_sent"].get("retransmits")
    else:
        s = received["end"]["sum"]
        run["udp"] = {"packets": s["packets"], "lost": s["lost_packets"],
                      "lost_pct": s["lost_percent"],
                      "out_of_order": sum(st["udp"].get("out_of_order", 0)
                                          for st in received["end"].get("streams", [])),
                      "sent": sent["end"]["sum"]["packets"], "seconds": s["seconds"]}
        run["pings"] = [{"t": round(t - t0, 4), "seq": q, "rtt_ms": r,
                         "phase": phase_of(steps, t - t0, t - t0),
                         "period": period_of(steps, t - t0)} for t, q, r in ping_samples(ping_out)]
        m = PING_SUMMARY.search(ping_out)
        if not m:
            raise RuntimeError(f"could not read ping's summary: {ping_out[-300:]!r}")
        run["ping"] = {"sent": int(m.group(1)), "received": int(m.group(2)),
                       "dup": int(m.group(3) or 0)}
    return run


def phase_of(steps: List[Dict[str, Any]], start: float, end: float, warmup: float = 0.0
             ) -> Optional[str]:
    """The phase [start, end] lies wholly in, from a command's answer to the next's issue (the
    first `warmup` s are no phase's: TCP's slow start)."""
    opens = [warmup] + [s["done_s"] for s in steps]
    closes = [s["issued_s"] for s in steps] + [float("inf")]
    for name, a, z in zip(PHASES, opens, closes):
        if a <= start and end <= z:
            return name
    return None


def phase_mbit(run: Dict[str, Any], phase: str) -> Optional[float]:
    """Mean receiver throughput over the seconds wholly inside the phase."""
    xs = [iv["mbit"] for iv in run["intervals"] if iv["phase"] == phase]
    return sum(xs) / len(xs) if xs else None


def period_of(steps: List[Dict[str, Any]], t: float) -> str:
    """Before the migration (until prepare is issued), during it, or after (finalize answered)."""
    if t < steps[0]["issued_s"]:
        return "before"
    return "after" if t > steps[-1]["done_s"] else "during"
