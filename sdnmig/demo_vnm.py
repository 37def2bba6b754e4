"""The demo's VNM step: the whole VNM testbed (old network o1..o4, new n1..n4, every link capped
at 24 Mbit/s, the path between h1 and h2 flipping every second) moved by Tunnel ALAP while h1
sends TCP to h2; a throughput line per phase, and the per-second trace drawn."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from sdnmig import vnm_lab
from sdnmig.vnm_phases import PHASES, phase_mbit

PHASE_S = 5.0


def vnm_tour(out_dir: Path) -> Dict[str, Any]:
    print(f"[1/1] VnmTopo, every link {vnm_lab.BW_MBIT:.0f} Mbit/s: iperf3 h1 -> h2 while Tunnel "
          f"ALAP prepares the tunnels, moves h1, moves h2 and finalizes, {PHASE_S:.0f} s a phase")
    run = vnm_lab.migration_run("alap", "tcp", PHASE_S,
                                log=lambda s: print(f"      {s}", flush=True))
    means = {ph: phase_mbit(run, ph) for ph in PHASES}
    for ph in PHASES:
        m = means[ph]
        if m is None:
            print(f"      {ph:12}  (no whole second)")
        else:
            share = f"  ({m / means['before']:.0%} of before)" if means["before"] else ""
            print(f"      {ph:12} {m:5.1f} Mbit/s{share}")
    _plot(run, out_dir / "demo_vnm.png")
    before, both = means["before"], means["both moved"]
    ok = bool(before and both and both >= 0.9 * before and means["finalized"])
    return {"ok": ok, "run": run, "phase_mbit": means}


def _plot(run: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([iv["end"] for iv in run["intervals"]], [iv["mbit"] for iv in run["intervals"]],
            marker=".")
    for s in run["steps"]:
        ax.axvline(s["issued_s"], linestyle="--", linewidth=0.8, color="grey")
        ax.annotate(s["command"], (s["issued_s"], 2), rotation=90, fontsize=7, xytext=(2, 0),
                    textcoords="offset points")
    ax.set_ylim(0, vnm_lab.BW_MBIT * 1.3)
    ax.set_xlabel("seconds")
    ax.set_ylabel("TCP Mbit/s (receiver)")
    ax.set_title("Tunnel ALAP: throughput while the whole network moves")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")
