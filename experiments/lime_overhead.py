#!/usr/bin/env python3
"""lime_overhead: what the LIME shim costs the learning app, in packet-ins answered per second.

The issue's part (b): 10 emulated switches x 100 hosts (ofbench), the learning app on os-ken

  plain         without the shim (`events = platform`)
  shim          with the shim, steady state: one instance per logical switch
  cloned        with the shim while every switch is cloned onto its spare, hosts tunnelled to
                the original over the link port (the state right after a LIME clone)
  cloned-local  the same, every port local on the spare too (rules on both instances)

Target: the shim's steady-state overhead, (1 - shim / plain) * 100 from the median seconds, at
most 5 %. The cloned rows are reported without a target.

Why these choices:
* The shim asks switches for whole packets (its packet-ins to apps carry OFP_NO_BUFFER and it
  refuses buffered PACKET_OUTs), so every configuration runs ofbench's no-buffer mode, the plain
  one included: the only difference between the rows is the shim.
* Every configuration connects the same 20 switches (10, plus an idle spare each, describing
  their ports), so the rows differ in nothing but the shim and the clone.
* Configurations are interleaved (plain, shim, cloned, ..., plain, ...) so a slow drift of the
  machine (others run tests on these 2 cores) is shared; each run records the foreign load
  (`cpu_cores_used.other`), and the headline its median.
* The clones are asked for on the controller instance's Redis, channel `lime:ops` (one request
  per switch, each answered on its own reply channel), from a worker thread: the emulated
  switches keep answering the barriers a clone waits for.

Usage:  .venv/bin/python experiments/lime_overhead.py [--quick] [--out DIR] [--repeats N]
        [--profile DIR]  (afterwards one py-spy run per configuration, not measured; the JSON
                          gets each one's share of samples in the shim's own code)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import common  # noqa: E402
from experiments import ofbench as ob  # noqa: E402

NAME = "lime_overhead"
OPS_CHANNEL = "lime:ops"  # lime_shim.app.OPS_CHANNEL (not imported: that loads the platform app)
TARGET_OVERHEAD_PCT = 5.0
#: Runs per configuration in a full run (3 until 2026-11-22): in 4 quick pairs the shim's runs
#: scattered by about 3 % from one controller process to the next and the plain ones by 0.5 %,
#: so the median takes more of them.
FULL_REPEATS = 5
CLONE_DEADLINE_S = 20.0
CONFIGS = ("plain", "shim", "cloned", "cloned-local")
LABELS = {"plain": "learning app\n(no shim)", "shim": "with shim\n(steady)",
          "cloned": "with shim, all cloned\n(hosts tunnelled)",
          "cloned-local": "with shim, all cloned\n(ports local on spare)"}


def bench_params(quick: bool) -> ob.Params:
    return ob.Params(switches=10, hosts=100, window=64, warmup_s=2.0,
                     duration_s=5 if quick else 10, no_buffer=True, ports=True, spares=True)


def shim_conf(params: ob.Params) -> Dict[str, str]:
    """[sdnmig] settings of the shim: every spare a clone target; the link port of each switch
    reserved (not a logical port: the tunnels to the spare go through it)."""
    dpids = range(1, params.switches + 1)
    return {"events": "lime",
            "lime_spares": ",".join(hex(ob.spare_dpid(d)) for d in dpids),
            "lime_reserved": ",".join(f"{d}:{ob.link_port(params.hosts)}" for d in dpids)}


def clone_request(dpid: int, hosts: int, layout: str) -> Dict[str, Any]:
    """The clone of switch `dpid` onto its spare: host ports tunnelled over the link port
    (`tunnel`) or all local on the spare (`local`); no neighbours (ofbench has no links)."""
    host_ports = [ob.host_port(h) for h in range(hosts)]
    req: Dict[str, Any] = {"op": "clone", "switch": dpid, "onto": ob.spare_dpid(dpid),
                           "neighbours": []}
    if layout == "tunnel":
        link = ob.link_port(hosts)
        req.update(ports={}, tunnels={str(p): [link, link] for p in host_ports})
    elif layout == "local":
        req.update(ports={str(p): p for p in host_ports}, tunnels={})
    else:
        raise ValueError(f"unknown clone layout {layout!r}")
    return req


class ShimOps:
    """Requests on the shim's operations channel (blocking: call from a worker thread)."""

    def __init__(self, host: str, port: int, password: str) -> None:
        import redis  # the unit tests of the pure parts need no Redis client

        self.redis = redis.Redis(host=host, port=port, password=password, socket_timeout=10)

    def request(self, req: Dict[str, Any], timeout: float = 30.0) -> Dict[str, Any]:
        reply = f"lime:reply:{uuid.uuid4().hex}"
        ps = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            ps.subscribe(reply)
            ps.get_message(timeout=1.0)  # the subscription confirmed before the request goes
            if self.redis.publish(OPS_CHANNEL, json.dumps({**req, "reply": reply})) != 1:
                raise ob.BenchError("the LIME shim is not listening on lime:ops")
            msg = ps.get_message(timeout=timeout)
            if msg is None:
                raise ob.BenchError(f"no answer from the shim to {req['op']} in {timeout:g} s")
            return json.loads(msg["data"])
        finally:
            ps.close()

    def until_ok(self, req: Dict[str, Any], deadline: float) -> Dict[str, Any]:
        """Repeat while the shim refuses (a spare's or switch's role not settled yet)."""
        import time

        while True:
            got = self.request(req)
            if got.get("ok") or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def close(self) -> None:
        self.redis.close()


def wait_mapped(ops: ShimOps, switches: int) -> Dict[str, Any]:
    """Until the shim has made every switch a logical switch (its role settled)."""
    import time

    deadline = time.monotonic() + CLONE_DEADLINE_S
    while True:
        status = ops.request({"op": "status"})
        if len(status.get("switches", {})) >= switches:
            return status
        if time.monotonic() > deadline:
            raise ob.BenchError(f"the shim mapped {len(status.get('switches', {}))} of "
                                f"{switches} switches in {CLONE_DEADLINE_S:g} s")
        time.sleep(0.05)


def clone_all(ops: ShimOps, switches: int, hosts: int, layout: str) -> Dict[str, Any]:
    """Clone every switch onto its spare, one after another; the shim's answers and status."""
    import time

    wait_mapped(ops, switches)
    deadline = time.monotonic() + CLONE_DEADLINE_S
    answers = []
    for dpid in range(1, switches + 1):
        got = ops.until_ok(clone_request(dpid, hosts, layout), deadline)
        if not got.get("ok"):
            raise ob.BenchError(f"clone of {dpid:#x} refused: {got.get('error')}")
        answers.append(got)
    status = ops.request({"op": "status"})
    two = [k for k, v in status.get("switches", {}).items() if len(v) == 2]
    if len(two) != switches:
        raise ob.BenchError(f"after the clones only {len(two)} switches have two instances")
    return {"layout": layout, "clone_ms": [a.get("ms") for a in answers],
            "instances": status["switches"]}


def shim_setup(ops: ShimOps, params: ob.Params, layout: Optional[str]) -> Dict[str, Any]:
    """Every switch mapped by the shim; then, with a layout, every switch cloned."""
    if layout is None:
        return {"instances": wait_mapped(ops, params.switches)["switches"]}
    return clone_all(ops, params.switches, params.hosts, layout)


def clone_setup(shim: bool, layout: Optional[str], params: ob.Params,
                profile_to: Optional[Path] = None) -> Callable[[ob.Endpoint], ob.Setup]:
    """ofbench's setup hook, run before the first packet-in: with the shim, wait until it maps
    every switch and clone them (`layout`: none, tunnel, local); then optionally start py-spy
    on the controller for the warm-up and the measured window."""
    def for_endpoint(ep: ob.Endpoint) -> ob.Setup:
        async def setup(switches: List[Any], spares: List[Any]) -> Dict[str, Any]:
            loop = asyncio.get_running_loop()
            result: Dict[str, Any] = {}
            if shim:
                if ep.redis is None:
                    raise ob.BenchError("the target has no Redis to reach the shim on")
                ops = ShimOps(*ep.redis)
                try:
                    result = await loop.run_in_executor(None, shim_setup, ops, params, layout)
                finally:
                    ops.close()
            if profile_to is not None:
                result["profile"] = start_profiler(ep.pids["controller"], profile_to,
                                                   params.warmup_s + params.duration_s)
            return result
        return setup
    return for_endpoint


def py_spy() -> Optional[str]:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


_PROFILERS: List[subprocess.Popen] = []  # waited for by `profile` before the next run


def start_profiler(pid: int, out: Path, seconds: float) -> Dict[str, Any]:
    """py-spy record (collapsed stacks, all threads) in the background; it ends by itself,
    a second before the controller is stopped."""
    exe = py_spy()
    if exe is None:
        return {"error": "py-spy not installed"}
    out.parent.mkdir(parents=True, exist_ok=True)
    _PROFILERS.append(subprocess.Popen(
        [exe, "record", "-p", str(pid), "-d", str(max(1, int(seconds) - 1)), "-r", "200",
         "-f", "raw", "-o", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    return {"py_spy_pid": _PROFILERS[-1].pid, "file": str(out)}


def layout_of(config: str) -> Optional[str]:
    return {"cloned": "tunnel", "cloned-local": "local"}.get(config)


def run_config(config: str, params: ob.Params, pin: bool,
               profile_to: Optional[Path] = None) -> Dict[str, Any]:
    """One run of one configuration (a fresh controller each time)."""
    apps = ("learning",) if config == "plain" else ("lime", "learning")
    conf = {} if config == "plain" else shim_conf(params)
    record = ob.run_once("osken", params, pin, conf, apps,
                         clone_setup(config != "plain", layout_of(config), params, profile_to))
    record["config"] = config
    return record


def plan(configs: Sequence[str], repeats: int) -> List[Tuple[int, str]]:
    """A B C A B C ...: interleaved, so drift of the machine is shared by every configuration."""
    return [(rep, c) for rep in range(repeats) for c in configs]


def overhead_pct(without: Optional[float], with_: Optional[float]) -> Optional[float]:
    if not without or with_ is None:
        return None
    return round((1.0 - with_ / without) * 100.0, 2)


def measure(quick: bool, out_dir: Path, repeats: int,
            configs: Sequence[str] = CONFIGS) -> Dict[str, Any]:
    """Run every configuration `repeats` times, interleaved; raw per-second samples by
    configuration, the runs, and the parameters. `out_dir` takes nothing here (main writes)."""
    params = bench_params(quick)
    params.check()
    pin = (os.cpu_count() or 1) >= 2
    if pin:
        common.pin_process(os.getpid(), ob.GENERATOR_CPU)
    order = plan(configs, repeats)
    progress = common.Progress(NAME, len(order))
    runs: List[Dict[str, Any]] = []
    interrupted = False
    try:
        for rep, config in order:
            progress.start(f"{config}, run {rep + 1}/{repeats}")
            record = run_config(config, params, pin)
            record["repeat"] = rep
            runs.append(record)
            progress.finish(describe(record))
    except KeyboardInterrupt:
        interrupted = True
        progress.note("interrupted: everything started was stopped; keeping what was measured")
    samples = {c: [x for r in runs if r["config"] == c and "error" not in r
                   for x in r["per_second"]] for c in configs}
    return {"params": asdict(params), "pinned": pin, "configs": list(configs),
            "samples": samples, "runs": runs, "interrupted": interrupted,
            "out_dir": str(out_dir)}


def describe(record: Dict[str, Any]) -> str:
    if "error" in record:
        return f"FAILED: {record['error']}"
    cpu = record["cpu_cores_used"]
    busy = ", ".join(f"{k} {v:.0%}" for k, v in cpu.items() if k != "wall_s" and v is not None)
    return (f"{record['answers_per_s']:,.0f} answers/s (lost {record['lost']}, stray "
            f"{record['stray_answers']}; CPU: {busy})")


def summarise(result: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Statistics per configuration, and the headline (overheads from the medians)."""
    summary: Dict[str, Any] = {}
    med: Dict[str, Optional[float]] = {}
    for c in result["configs"]:
        ok = [r for r in result["runs"] if r["config"] == c and "error" not in r]
        stats = common.summarize(result["samples"][c])
        stats["runs_ok"] = len(ok)
        stats["runs_failed"] = sum(1 for r in result["runs"] if r["config"] == c and "error" in r)
        stats["run_means"] = [r["answers_per_s"] for r in ok]
        others = [r["cpu_cores_used"]["other"] for r in ok]
        stats["foreign_load_cores"] = others
        stats["controller_cores"] = [r["cpu_cores_used"].get("controller") for r in ok]
        summary[c] = stats
        med[c] = stats["median"]
    shim_pct = overhead_pct(med.get("plain"), med.get("shim"))
    all_other = [x for s in summary.values() for x in s["foreign_load_cores"]]
    headline: Dict[str, Any] = {
        "packet_ins_per_s_without_shim": _round(med.get("plain")),
        "packet_ins_per_s_with_shim": _round(med.get("shim")),
        "packet_ins_per_s_all_cloned": _round(med.get("cloned")),
        "packet_ins_per_s_all_cloned_local": _round(med.get("cloned-local")),
        "shim_overhead_pct": shim_pct,
        "cloned_overhead_pct": overhead_pct(med.get("plain"), med.get("cloned")),
        "cloned_local_overhead_pct": overhead_pct(med.get("plain"), med.get("cloned-local")),
        "target_overhead_pct": TARGET_OVERHEAD_PCT,
        "target_met": None if shim_pct is None else shim_pct <= TARGET_OVERHEAD_PCT,
        "foreign_load_cores_median": (_round(common.summarize(all_other)["median"], 2)
                                      if all_other else None),
    }
    return summary, headline


def _round(x: Optional[float], nd: int = 1) -> Optional[float]:
    return None if x is None else round(x, nd)


def plot(path: Path, result: Dict[str, Any], headline: Dict[str, Any]) -> Optional[Path]:
    p = result["params"]
    groups = {LABELS.get(c, c): result["samples"][c] for c in result["configs"]}
    refs = {}
    if headline["packet_ins_per_s_without_shim"]:
        refs["no shim -5 % (target for the steady shim)"] = \
            headline["packet_ins_per_s_without_shim"] * (1 - TARGET_OVERHEAD_PCT / 100)
    title = (f"LIME shim overhead: packet-ins answered per second (each point one second), "
             f"overhead {headline['shim_overhead_pct']} %\n{p['switches']} switches x "
             f"{p['hosts']} hosts, window {p['window']}, no-buffer, {p['duration_s']} s after "
             f"{p['warmup_s']:g} s warm-up; learning app on os-ken")
    return common.plot_samples(path, groups, ylabel="answers / s", title=title, reference=refs)


SHIM_FILES = ("lime_shim/",)  # how py-spy names the shim's source files (relative paths)


def shim_share(collapsed: str, top: int = 8) -> Dict[str, Any]:
    """Where a py-spy record (raw, collapsed stacks) of the controller went: the share of samples
    whose innermost Python frame is the shim's own code (its receive hop, its port checks on the
    apps' answers). What it calls (the platform's send, the apps' handlers) is not counted: the
    run without the shim does that work too. Also the busiest shim lines. (A record covers the
    warm-up too, whose first answers flood: translate.packet_out_plan lines are from those.)"""
    total, own = 0, 0
    lines: Dict[str, int] = {}
    for row in collapsed.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.rsplit(";", 1)[-1]
        if any(f"({f}" in leaf for f in SHIM_FILES):
            own += n
            lines[leaf] = lines.get(leaf, 0) + n
    busiest = sorted(lines.items(), key=lambda kv: -kv[1])[:top]
    return {"samples": total, "shim_self_samples": own,
            "shim_self_pct": round(own * 100.0 / total, 2) if total else None,
            "busiest_shim_lines": [{"frame": k, "samples": v} for k, v in busiest]}


def profile(out_dir: Path, quick: bool, configs: Sequence[str] = ("shim", "cloned")
            ) -> Dict[str, Dict[str, Any]]:
    """One run per configuration with py-spy attached (throughput not used): collapsed stacks,
    and how much of them is the shim's own code (`shim_share`)."""
    params = bench_params(quick)
    pin = (os.cpu_count() or 1) >= 2
    files: Dict[str, Dict[str, Any]] = {}
    for config in configs:
        out = out_dir / f"{NAME}-{config}.pyspy.txt"
        record = run_config(config, params, pin, profile_to=out)
        while _PROFILERS:
            proc = _PROFILERS.pop()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.terminate()  # our own child, by PID
                proc.wait(5)
        share = shim_share(out.read_text(errors="replace")) if out.exists() else {}
        print(f"[{NAME} profile] {config}: {describe(record)}; shim's own code "
              f"{share.get('shim_self_pct')} % of {share.get('samples')} samples -> {out}",
              file=sys.stderr)
        files[config] = {"file": str(out), "answers_per_s": record.get("answers_per_s"), **share}
    return files


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="lime_overhead.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_convention_args(ap)
    ap.add_argument("--repeats", type=int,
                    help=f"runs per configuration (default {FULL_REPEATS}, --quick 1)")
    ap.add_argument("--config", action="append", choices=CONFIGS,
                    help="only these configurations (repeatable; default all)")
    ap.add_argument("--profile", type=Path, metavar="DIR",
                    help="afterwards, one py-spy run of each configuration into DIR")
    args = ap.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else FULL_REPEATS)
    configs = tuple(args.config or CONFIGS)
    signal.signal(signal.SIGTERM, _terminate)
    result = measure(args.quick, args.out, repeats, configs)
    summary, headline = summarise(result)
    params = result["params"]
    configurations = [{"name": c, "label": LABELS.get(c, c).replace("\n", " "), "target": "osken",
                       "apps": ["learning"] if c == "plain" else ["lime", "learning"],
                       "app_conf": {} if c == "plain" else shim_conf(bench_params(args.quick)),
                       "clone_layout": layout_of(c), "repeats": repeats,
                       "pinned": result["pinned"], **params} for c in configs]
    out_json, out_png = args.out / f"{NAME}.json", args.out / f"{NAME}.png"
    extra: Dict[str, Any] = {"interrupted": result["interrupted"]}
    if args.profile and not result["interrupted"]:
        extra["profiles"] = profile(args.profile, args.quick,
                                    list(configs))
    common.write_json(out_json, common.result_document(
        NAME, args.quick, configurations, result["runs"], summary, headline, **extra))
    png = plot(out_png, result, headline)
    print(f"[{NAME}] wrote {out_json}" + (f" and {png}" if png else ""), file=sys.stderr)
    if result["interrupted"]:
        return 130
    common.print_headline(headline)
    return 1 if any("error" in r for r in result["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
