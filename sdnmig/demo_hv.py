"""The demo's hypervisor step: two tenants' learning apps, each on its slice of one switch
through the proxy and a hypervisor instance; the switch's control path moves hv1 -> hv2 -> hv1
while h1 pings h2 (tenant t1) and h3 pings h4 (t2), and numbered frames to fresh destinations
(a packet-in and a packet-out each) cross t1's slice. Printed: isolation, each migration's time,
who serves whom, pings and frames lost; plotted: the ping RTTs with the migrations marked."""
from __future__ import annotations

import json
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from sdnmig import lab
from sdnmig.hv_lab import deploy
from topologies.testbeds import SlicedTopo

FRAMES, FRAME_RATE = 2000, 200.0


def hv_tour(out_dir: Path) -> Dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="sdnmig-demo-hv-"))
    ctl = lab.Controllers(state / "tenants")
    net = None
    d = None
    try:
        print("[1/3] tenants t1 and t2 (learning apps), one switch sliced by port, the proxy "
              "and hypervisor instances hv1, hv2 started by the management entity")
        t1, = ctl.start(1, ids=["t1"])
        t2, = ctl.start(1, ids=["t2"])
        topo = SlicedTopo(switches=1, prefix=lab.unique_prefix())
        net = lab.build_net(topo, [])
        lab.disable_ipv6(net)
        d = deploy(net, topo, state / "hv", {"t1": f"127.0.0.1:{t1.of_port}",
                                             "t2": f"127.0.0.1:{t2.of_port}"})
        for a, b in (("h1", "h2"), ("h3", "h4")):
            lab.poll(lambda: d.ping(a, b, 1) == 1, 15, f"{a} reaching {b}")
        isolated = d.ping("h1", "h3", 2) == 0 and d.ping("h2", "h4", 2) == 0
        print(f"      served: {_served(d)}; h1 -> h3 across slices: "
              f"{'blocked' if isolated else 'REACHED (isolation broken)'}")
        print("[2/3] pings every 20 ms on both slices and 2000 frames through t1's controller, "
              "while the switch moves hv1 -> hv2 -> hv1")
        pings = {h: d.host(h).popen(f"ping -n -i 0.02 {d.host(b).IP()}", stdout=open(
            state / f"ping-{h}.txt", "w"), stderr=sys.stderr, shell=True)
            for h, b in (("h1", "h2"), ("h3", "h4"))}
        rx_out, tx_out = state / "rx.json", state / "tx.json"
        py = sys.executable
        rx = d.host("h2").popen([py, "-m", "sdnmig.seqframes", "recv", "--iface",
                                 d.host("h2").defaultIntf().name, "--out", str(rx_out)])
        lab.poll(lambda: rx_out.with_name(rx_out.name + ".ready").exists(), 10, "the receiver")
        tx = d.host("h1").popen([py, "-m", "sdnmig.seqframes", "send", "--iface",
                                 d.host("h1").defaultIntf().name, "--count", str(FRAMES),
                                 "--rate", str(FRAME_RATE), "--out", str(tx_out)])
        start = time.monotonic()
        marks: List[Tuple[float, str, Dict[str, Any]]] = []
        for at, to in ((3.0, "hv2"), (6.5, "hv1")):
            time.sleep(max(0.0, start + at - time.monotonic()))
            t = time.monotonic() - start
            answer = d.m.migrate(d.bridge(), to)
            marks.append((t, to, answer))
            print(f"      {t:4.1f} s: moved to {to} in {answer.get('seconds', 0) * 1000:.1f} ms, "
                  f"tenants {answer.get('tenants')}, set-controller {answer['set_controller']}")
        tx.wait(60)
        time.sleep(1.0)
        rx.send_signal(signal.SIGTERM)
        rx.wait(10)
        for p in pings.values():
            p.send_signal(signal.SIGINT)
            p.wait(10)
        seqs = json.loads(rx_out.read_text())["seqs"]
        frames_ok = seqs == list(range(FRAMES))
        print(f"[3/3] frames: {len(seqs)} of {FRAMES} arrived, "
              f"{'each once and in order' if frames_ok else 'NOT each once in order'}; "
              f"served now: {_served(d)}")
        stats = {h: _ping_stats((state / f"ping-{h}.txt").read_text()) for h in pings}
        for h, s in stats.items():
            print(f"      {h}: {s['received']} of {s['sent']} pings answered, median "
                  f"{s['median_ms']:.3f} ms, max {s['max_ms']:.3f} ms")
        _plot(stats, marks, out_dir / "demo_hv.png")
        ok = (isolated and frames_ok and all(a["set_controller"] for _t, _to, a in marks)
              and all(s["sent"] - s["received"] <= 1 for s in stats.values()))
        return {"ok": ok, "pings": stats, "frames": len(seqs)}
    finally:
        problems = d.teardown() if d is not None else []
        if net is not None:
            net.stop()
        problems += ctl.close()
        for p in problems:
            print(f"      log: {p}")


def _served(d: Any) -> str:
    return ", ".join(f"{t} by {by}" for (_s, t), by in sorted(d.served_by().items()))


def _ping_stats(text: str) -> Dict[str, Any]:
    rtts = [(int(m.group(1)), float(m.group(2)))
            for m in re.finditer(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms", text)]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (len(rtts), len(rtts))
    values = sorted(r for _s, r in rtts) or [0.0]
    return {"sent": sent, "received": received, "rtts": rtts,
            "median_ms": values[len(values) // 2], "max_ms": values[-1]}


def _plot(stats: Dict[str, Any], marks: List[Tuple[float, str, Dict[str, Any]]],
          path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    for h, s in stats.items():
        ax.plot([seq * 0.02 for seq, _r in s["rtts"]], [r for _s, r in s["rtts"]], ".", ms=2,
                label=f"{h} ({'t1' if h == 'h1' else 't2'})")
    for t, to, _a in marks:
        ax.axvline(t, linestyle="--", linewidth=0.8, color="grey")
        ax.annotate(f"to {to}", (t, 0), rotation=90, fontsize=7, xytext=(2, 2),
                    textcoords="offset points")
    ax.set_xlabel("seconds (ping sequence x 20 ms)")
    ax.set_ylabel("ping RTT (ms)")
    ax.set_title("Control path moved between hypervisor instances while tenants ping")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")
