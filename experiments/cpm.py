#!/usr/bin/env python3
"""cpm: control-path migration between hypervisor instances under a steady request load
(the distributed-hypervisor paper, sec. V, Figs. 5 and 6).

A rate-controlled generator (`sdnmig.cpm_gen`, the paper's extended OFTest) is the tenant's
controller: it sends FEATURES_REQUEST at 100, 500, 1000, 5000 and 10000 per second through the
proxy and a hypervisor instance to a real OVS bridge and times each reply by xid. In the middle of
every run the switch's control path moves to the other instance (take-over through the passive
port, then one set-controller call); runs alternate direction, so each starts on the instance
the last one moved to. Settings:
- `plain`: no added delay;
- `delayed`: the paper's testbed delays in user space, 10 ms proxy-hypervisor and 5 ms
  hypervisor-switch, each way (this machine has no netem);
- `direct`: the generator is the bridge's controller, no proxy or hypervisor, no migration
  (the baseline for the path's added latency).

Full run: 40 runs of 40 s per rate and setting (as the paper; `--runs`, `--seconds` to change);
`--quick`: 2 runs of 6 s. Per-request samples (send offset and latency in microseconds; None =
no reply within 1 s) go into `cpm.samples.json.gz` beside `cpm.json`, which names it: at
10,000 requests a second they are millions (166 MB of plain JSON for 3 runs a rate), too many
for the summary file; `cpm.json` keeps each run's summary and its latency in 100 ms buckets. Plots: latency over time for one run at
100, 500 and 1000/s with the migration marked (Fig. 5), and per rate the mean peak latency,
the affected share and the losses (Fig. 6). Definitions: `sdnmig.cpm_stats`.

Last line: {"lost_total", "max_rate_zero_loss", "peak_ms_1000_delayed",
"affected_pct_1000_delayed", "median_added_ms_vs_direct"}.
"""
from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import common  # noqa: E402
from sdnmig import cpm_stats  # noqa: E402
from sdnmig.cpm_gen import XID_BASE, Generator  # noqa: E402
from sdnmig.cpm_lab import Stack  # noqa: E402

NAME = "cpm"
RATES = (100, 500, 1000, 5000, 10000)
DPID = 0xC9
TARGETS = {"lost_total": 0, "peak_ms_1000_delayed": 43.0, "affected_pct_1000_delayed": 0.1,
           "median_added_ms_vs_direct": 1.0}
#: the paper's figures (sec. V) for the plot
PAPER = {"peak_ms_1000_delayed": 57.0, "affected_1000": 45}


def _samples(run: Any) -> Dict[str, List[Any]]:
    t0 = run.start
    return {"sent_us": [round((t - t0) * 1e6) for t in run.sent],
            "latency_us": [None if x is None else round(x * 1000) for x in run.latencies_ms()]}


async def _one(gen: Generator, stack: Optional[Stack], rate: float, seconds: float
               ) -> Dict[str, Any]:
    migration: Dict[str, Any] = {}

    async def migrate() -> None:
        migration.update(await stack.migrate())

    at = ((seconds / 2, "migration", migrate),) if stack is not None else ()
    run = await gen.load(rate, seconds, at=at)
    samples = _samples(run)
    sent_s = [t / 1e6 for t in samples["sent_us"]]
    lat_ms = [None if x is None else x / 1000.0 for x in samples["latency_us"]]
    first = None
    if stack is not None:
        proxy = await stack.status("proxy")
        last = proxy["tenancies"][0]["last_migration"] if proxy["tenancies"] else {}
        migration["proxy"] = last
        xid = last.get("first_to_target_xid")
        first = xid - XID_BASE if xid is not None else None
        before = last.get("last_to_initial_xid")
        last_initial = before - XID_BASE if before is not None else None
        if not migration.get("set_controller"):
            raise RuntimeError(f"the migration did not complete: {migration}")
    summary = cpm_stats.summarize_run(rate, seconds, sent_s, lat_ms,
                                      first, last_initial if stack is not None else None)
    if stack is not None and first is None:  # the hand-over fell between two requests:
        summary.update(affected=0, affected_pct=0.0)   # none was routed to the target early
    events = {k: round(v - run.start, 6) for k, v in run.events.items()}
    return {"summary": summary, "migration": migration, "events": events,
            "series": cpm_stats.series(sent_s, lat_ms), "samples": samples}


async def _setting(setting: str, rates: Sequence[float], runs: int, seconds: float,
                   work: Path, progress: common.Progress) -> List[Dict[str, Any]]:
    gen = Generator()
    port = await gen.listen()
    stack = None
    if setting == "direct":
        stack_dir = work / setting
        stack_dir.mkdir(parents=True, exist_ok=True)
        direct = Stack(stack_dir, {}, DPID)
        bridge = direct.bridge
        from sdnmig import ovs
        ovs.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev",
                  "fail_mode=secure", "protocols=OpenFlow13",
                  f"other-config:datapath-id={DPID:016x}", "--", "set-controller", bridge,
                  f"tcp:127.0.0.1:{port}")
    else:
        stack = Stack(work / setting, {"t1": f"127.0.0.1:{port}"}, DPID,
                      delays=setting == "delayed")
        await stack.start()
    out: List[Dict[str, Any]] = []
    try:
        await asyncio.wait_for(gen.connected.wait(), 20)
        await gen.probe(10)
        for rate in rates:
            for n in range(runs):
                label = f"{setting} {rate}/s run {n + 1}/{runs}"
                progress.start(label)
                record: Dict[str, Any] = {"setting": setting, "rate": rate, "run": n,
                                          "seconds": seconds}
                try:
                    await gen.probe(10)   # the path is back before the clock starts
                    record.update(await _one(gen, stack, rate, seconds))
                except Exception as exc:  # noqa: BLE001  one failed run keeps the others
                    record["error"] = f"{type(exc).__name__}: {exc}"
                    traceback.print_exc(file=sys.stderr)
                s = record.get("summary", {})
                progress.finish(f"{label}: lost {s.get('lost')}, median {s.get('median_ms')} "
                                f"ms, peak {s.get('peak_ms')} ms, affected "
                                f"{s.get('affected')}" if s else f"{label}: {record['error']}")
                out.append(record)
    finally:
        await gen.close()
        if stack is not None:
            problems = await stack.stop()
            if problems:
                out.append({"setting": setting, "error": "exceptions logged",
                            "log": problems[:20]})
        else:
            from sdnmig import ovs
            ovs.vsctl("--if-exists", "del-br", bridge)
    return out


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    by: Dict[str, Dict[float, List[Dict[str, Any]]]] = {}
    for r in runs:
        if "summary" in r:
            by.setdefault(r["setting"], {}).setdefault(r["rate"], []).append(r["summary"])
    return {setting: {str(rate): cpm_stats.aggregate(rs) for rate, rs in sorted(rates.items())}
            for setting, rates in by.items()}


def headline(summary: Dict[str, Any], runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    def get(setting: str, rate: int, key: str) -> Any:
        return summary.get(setting, {}).get(str(rate), {}).get(key)

    failed = sum(1 for r in runs if "error" in r)
    lost = sum(a["lost_total"] for s in ("plain", "delayed") for a in summary.get(s, {}).values())
    zero = [cpm_stats.max_rate_zero_loss({float(k): v for k, v in summary.get(s, {}).items()})
            for s in ("plain", "delayed") if s in summary]
    plain, direct = get("plain", 1000, "median_ms"), get("direct", 1000, "median_ms")
    return {"lost_total": lost + (failed and None or 0) if not failed else None,
            "max_rate_zero_loss": min(z for z in zero if z is not None) if zero and all(
                z is not None for z in zero) else None,
            "peak_ms_1000_delayed": get("delayed", 1000, "peak_ms_mean"),
            "affected_pct_1000_delayed": get("delayed", 1000, "affected_pct_mean"),
            "median_added_ms_vs_direct": (round(plain - direct, 3)
                                          if plain is not None and direct is not None
                                          else None)}


def _write_samples(path: Path, runs: List[Dict[str, Any]]) -> None:
    """Every run's per-request samples, gzipped; taken out of the runs kept in cpm.json."""
    rows = [{"setting": r["setting"], "rate": r["rate"], "run": r["run"],
             **r.pop("samples")} for r in runs if "samples" in r]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with gzip.open(tmp, "wt") as f:
        json.dump(rows, f, separators=(",", ":"))
    tmp.replace(path)


def plot(path: Path, runs: List[Dict[str, Any]], summary: Dict[str, Any]) -> Optional[Path]:
    plt = common._pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2))
    ax = axes[0]
    for rate, color in ((100, "tab:blue"), (500, "tab:orange"), (1000, "tab:green")):
        run = next((r for r in runs if r.get("setting") == "delayed" and r.get("rate") == rate
                    and "series" in r), None) or next(
            (r for r in runs if r.get("setting") == "plain" and r.get("rate") == rate
             and "series" in r), None)
        if run is None:
            continue
        start = run["events"].get("migration_start", 0.0)
        pts = [(t - start, y) for t, y, _n in run["series"] if y is not None
               and abs(t - start) <= 2.0]
        ax.plot([t for t, _y in pts], [y for _t, y in pts], ".-", ms=3, lw=0.7, color=color,
                label=f"{rate}/s ({run['setting']})")
    ax.plot([0], [0], "o", color="red", ms=6)
    ax.set_xlabel("seconds from the migration's start")
    ax.set_ylabel("worst latency per 100 ms (ms)")
    ax.set_title("Fig. 5: FEATURES_REQUEST latency around the migration", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    panels = (("peak_ms_mean", "mean peak latency (ms)"),
              ("affected_pct_mean", "affected requests (% of run)"),
              ("lost_total", "lost requests (all runs)"))
    settings = [s for s in ("direct", "plain", "delayed") if s in summary]
    for ax, (key, label) in zip(axes[1:], panels):
        width = 0.8 / max(1, len(settings))
        for i, s in enumerate(settings):
            rates = list(summary[s])
            vals = [summary[s][r].get(key) or 0 for r in rates]
            ax.bar([j + i * width for j in range(len(rates))], vals, width, label=s)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rates))])
            ax.set_xticklabels(rates, fontsize=8)
        if key == "peak_ms_mean":
            ax.axhline(PAPER["peak_ms_1000_delayed"], ls="--", color="grey", lw=0.8)
            ax.text(0, PAPER["peak_ms_1000_delayed"], "paper, 1000/s: 57 ms", fontsize=7,
                    va="bottom")
        if key == "lost_total" and not any(summary[s][r].get(key) for s in settings
                                           for r in summary[s]):
            ax.text(0.5, 0.5, "no request lost,\nin any setting or rate", ha="center",
                    transform=ax.transAxes)
        ax.set_xlabel("requests per second")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    return common._save(plt, fig, path, "control-path migration under load (Fig. 6 style)")


async def amain(args: argparse.Namespace) -> int:
    runs_n = args.runs or (2 if args.quick else 40)
    seconds = args.seconds or (6.0 if args.quick else 40.0)
    rates = args.rates or list(RATES)
    settings = args.settings or ["direct", "plain", "delayed"]
    work = Path(tempfile.mkdtemp(prefix="cpm-"))
    progress = common.Progress(NAME, runs_n * len(rates) * len(settings))
    runs: List[Dict[str, Any]] = []
    try:
        for setting in settings:
            runs += await _setting(setting, rates, runs_n, seconds, work, progress)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(runs)
    head = headline(summary, runs)
    configurations = [{"setting": s, "rates": rates, "runs": runs_n, "seconds": seconds,
                       "delays_ms": ({"proxy_hv": 10.0, "hv_switch": 5.0} if s == "delayed"
                                     else None)} for s in settings]
    met = {k: (head[k] is not None and (head[k] == v if k == "lost_total" else head[k] <= v))
           for k, v in TARGETS.items()}
    samples_path = args.out / f"{NAME}.samples.json.gz"
    _write_samples(samples_path, runs)
    doc = common.result_document(NAME, args.quick, configurations, runs, summary, head,
                                 targets=TARGETS, targets_met=met, paper=PAPER,
                                 failed_runs=sum(1 for r in runs if "error" in r),
                                 samples_file=samples_path.name)
    out = common.write_json(args.out / f"{NAME}.json", doc)
    png = plot(args.out / f"{NAME}.png", runs, summary)
    print(f"wrote {out}" + (f" and {png}" if png else ""), file=sys.stderr)
    common.print_headline(head)
    return 1 if any("error" in r for r in runs) else 0


def main(argv: Any = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_convention_args(p)
    p.add_argument("--runs", type=int, help="runs per rate and setting (full: 40, quick: 2)")
    p.add_argument("--seconds", type=float, help="seconds per run (full: 40, quick: 6)")
    p.add_argument("--rates", type=int, nargs="+", help=f"requests per second {RATES}")
    p.add_argument("--settings", nargs="+", choices=["direct", "plain", "delayed"])
    p.add_argument("--keep", action="store_true", help="keep the processes' logs")
    return asyncio.run(_cancellable(amain(p.parse_args(argv))))


async def _cancellable(coro: Any) -> int:
    """SIGINT or SIGTERM cancels the run, so its processes and bridge are stopped."""
    import signal
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        print("cpm: interrupted; what was started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
