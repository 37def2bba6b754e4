#!/usr/bin/env python3
"""meta_migration: Fixed ERC vs Meta-Migration on real OVS (paper sec. IV: Fig. 6, 8, 9, 10, Table I).

Testbed. Four loopback controller instances c1..c4 (os-ken, apps learning + erc, each with its
own Redis, one shared bus Redis), one userspace OVS switch s1 (MetaTopo with one switch) and its
host h1. c1 is the initial master. In h1 a sender (experiments/loadgen.py) writes frames to fresh
destination MACs at Poisson intervals (mean 200/s), so each one is a packet-in at s1's master.

State. Before each round (below) c1's state for s1 (`sw:<dpid>:*`: the real learned entries, the
counters, plus synthetic MAC entries and a random pad string, experiments/statepad.py) is brought
to the target size (default 1 MB, as DUMP lengths).

Load and glitches. A candidate's load L is a cgroup v1 CPU quota of (1 - L) of one core shared
by its controller process and its own Redis (experiments/cpuload.py: 10 ms period; c1, its Redis
and the bus are never limited). Glitches
pause a candidate's controller with SIGSTOP/SIGCONT for a Pareto time at a random moment between
its START and STATE_ACK (experiments/glitch.py, which says how the moment is drawn).

A run. With c1 confirmed master (and every candidate SLAVE), the counters are read, the migration
c1 -> candidates runs (sdnmig.ops.migrate, which returns the initiator's record), the counters are
read again: the difference is the run's sample (CPU from /proc/PID/task/*/schedstat; controller
bytes from the kernel's per-socket TCP counters, experiments/sockbytes.py, because /proc/PID/io
does not see socket send()/recv(); Redis bytes from INFO; see COUNTERS). Then the quotas are lifted, the switch is migrated back to c1 (Fixed,
copy; not measured), the roles are awaited, and the quotas are put back, so every run starts from
the same initial master and the same state. A run that does not commit (timeout, abort, error)
counts in the CDFs at the timeout and is reported. Overhead configurations also measure, after the
run, a window of the same length with no migration (the "No Mig." baseline of Fig. 9 / Table I).

Order. The configurations take turns, round-robin: round i runs each configuration's i-th run, so
the machine's drift over the hour weighs on all of them alike. The first rounds are warm-up runs
(not counted; they seed the glitch windows). Each configuration keeps its own random streams, so
its runs do not depend on which other configurations were selected. The glitch watcher (a bus
subscriber thread in this process) runs throughout when any selected configuration has glitches,
so every configuration shares its small cost alike; the state's size is recorded from round 0.
`--quick` is the same with 15 runs and 1 warm-up per configuration (27 configurations, about a
minute here); the full run does 1000 (27,054 migrations: 51 minutes here on 2026-11-21 with the
configurations in sequence, 102 on 2026-11-22 round-robin while the results were still rewritten
after every round, which is now at most once a minute). No CPU pinning: the four controllers,
OVS and the Redis servers share the two cores, as the candidates' quotas assume.

Usage: .venv/bin/python experiments/meta_migration.py [--quick] [--out DIR] [--runs N] ...   (root)
Headline: {"p99_ratio_meta3_vs_fixed_random", "p50_ratio_meta3_vs_fixed_low",
           "cpu_ratio_master_k3_vs_idle", "source_bytes_ratio_shared_k3_vs_k1", "fixed_p50_ms",
           "runs_per_config"}
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments import common, cpuload, glitch, loadgen, sockbytes, statepad  # noqa: E402
from experiments import meta_analysis as analysis  # noqa: E402
from experiments import meta_plan as plan  # noqa: E402

NAME = "meta_migration"
QUICK_RUNS = 15  # x 27 configurations: about a minute here
#: Partial results are written between rounds at most this often: the whole document (tens of MB
#: by the end of a full run), analysed and written after each of its 1002 rounds, slowed it down.
PARTIAL_WRITE_S = 60.0

#: What the byte and CPU counters of a sample mean (copied into the JSON).
COUNTERS = {
    "cpu_ns": "CPU time of each controller process over the window: sum over its live threads of "
              "the first field of /proc/PID/task/TID/schedstat (ns)",
    "tcp": "bytes each controller process sent/received over TCP (its OpenFlow connection, its "
           "Redis, the bus): the kernel's per-socket bytes_sent/bytes_received (ss -tinp) summed "
           "over the sockets it holds; used for Table I and the source bytes",
    "io": "controller process rchar/wchar deltas (/proc/PID/io): bytes through read()/write()-"
          "family system calls (log and /proc files); NOT its network traffic: Python's socket "
          "send()/recv() bypass these counters (kept because they were asked for)",
    "redis": "INFO stats total_net_input_bytes/total_net_output_bytes deltas of each instance's "
             "Redis (c1..c4) and of the bus; each includes the measuring INFO exchange (~2 KB); "
             "when any selected configuration has glitches (the full run does), the bus also "
             "sends every control message (erc:*, not the snapshots on ercdata:*) once more to "
             "the experiment's watcher, in every configuration",
    "window_s": "wall time between the two readings around ops.migrate",
    "total_ms": "the initiator's total migration time (record total_ms: START to the winner's "
                "END_MIGRATION, which it sends once MASTER, before answering its buffer, as in the "
                "paper); the timeout if the migration did not commit",
    "drain_ms": "END_MIGRATION to DRAINED: the winner answering the packet-ins buffered during "
                "the migration (part of the switch's blackout, not of the migration time); "
                "None if the migration did not commit",
}


# -- the testbed ------------------------------------------------------------------------------------
class Testbed:
    """c1..c4 on loopback, s1 + h1 in Mininet, the sender running in h1, a quota group per candidate."""

    def __init__(self, workdir: Path, args: argparse.Namespace) -> None:
        self.workdir, self.args = workdir, args
        self.ctl: Any = None
        self.net: Any = None
        self.sender: Optional[loadgen.HostSender] = None
        self.quotas: Dict[str, cpuload.CpuQuota] = {}
        self.loads: Dict[str, float] = {c: 0.0 for c in plan.CANDIDATES}

    def start(self) -> None:
        import redis

        from sdnmig import lab
        from topologies.testbeds import MetaTopo

        self.ctl = lab.Controllers(self.workdir / "instances")
        # Static peers, no zeroconf advertisers: four fewer processes competing for two cores.
        insts = self.ctl.start(len(plan.CONTROLLERS), apps=("learning", "erc"),
                               ids=list(plan.CONTROLLERS), discovery=False,
                               extra_conf={"peers": ",".join(plan.CONTROLLERS)})
        self.insts = {i.id: i for i in insts}
        self.bus = self.ctl.bus.client()
        self.redis = {i.id: redis.Redis(host=i.host, port=i.redis_port, password=i.redis_password,
                                        socket_timeout=10) for i in insts}
        self.redis["bus"] = self.bus
        self.pids = {i.id: i.controller_pid for i in insts}
        topo = MetaTopo(switches=1, controllers=len(insts), prefix=lab.unique_prefix())
        self.net = lab.build_net(topo, insts)
        lab.disable_ipv6(self.net)
        self.bridge = topo.switches()[0]
        self.dpid = int(self.net.get(self.bridge).dpid, 16)
        self.settle()
        host = self.net.get(topo.hosts()[0])
        self.sender = loadgen.HostSender(host, self.args.rate, self.args.seed,
                                         self.workdir / "loadgen.json")
        for c in plan.CANDIDATES:
            self.quotas[c] = cpuload.CpuQuota(f"sdnmig-{topo.prefix}-{c}",
                                              (self.pids[c], self.insts[c].redis_pid),
                                              period_us=self.args.period_us)

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until c1 is the confirmed MASTER of s1 and every candidate SLAVE."""
        from sdnmig import lab

        lab.wait_roles(self.net, list(self.insts.values()), {self.bridge: plan.INITIAL}, timeout)

    def packet_in_count(self) -> int:
        raw = self.redis[plan.INITIAL].hget(f"{statepad.prefix_of(self.dpid)}l2:stats", "packet_in")
        return int(raw or 0)

    def master(self) -> Optional[str]:
        from ryu_apps.erc import wire

        raw = self.bus.hget(wire.MASTER_KEY, wire.dpid_text(self.dpid))
        return raw.decode() if raw else None

    def set_loads(self, loads: Dict[str, float]) -> None:
        for c, load in loads.items():
            self.quotas[c].apply(load)
        self.loads = dict(loads)

    def lift_loads(self) -> None:
        for c, q in self.quotas.items():
            if q.load is not None:
                q.set_load(0.0)

    def restore_loads(self) -> None:
        for c, q in self.quotas.items():
            if q.load is not None:
                q.set_load(self.loads[c])

    def check_alive(self) -> None:
        from sdnmig import instances

        dead = [i.id for i in self.insts.values() if instances.instance_state(i) != "running"]
        if dead:
            raise RuntimeError(f"controller instance(s) {', '.join(dead)} died:\n"
                               + self.ctl.dump_logs())
        if self.sender is not None and not self.sender.running():
            raise RuntimeError("the load sender in the host exited")

    def close(self) -> Tuple[Dict[str, Any], List[str]]:
        """Stop everything this testbed started; return the sender's counts and log problems."""
        sent: Dict[str, Any] = {}
        problems: List[str] = []
        try:
            for q in self.quotas.values():
                q.remove()
            if self.sender is not None:
                sent = self.sender.stop()
        finally:
            try:
                if self.net is not None:
                    self.net.stop()
            finally:
                if self.ctl is not None:
                    problems = self.ctl.close()
        return sent, problems


# -- counters ---------------------------------------------------------------------------------------
def read_counters(tb: Testbed, cpu_first: bool = False) -> Dict[str, Any]:
    """Every counter of a sample. The CPU/process readings go last before a window and first
    after it, so the window they span holds the migration and little of the reading itself."""
    out: Dict[str, Any] = {}

    def process() -> None:
        out["t"] = time.monotonic()
        out["cpu_ns"] = {c: common.process_cpu_ns(pid) for c, pid in tb.pids.items()}
        out["io"] = {c: common.process_io(pid) for c, pid in tb.pids.items()}

    def sockets_and_redis() -> None:
        tcp = sockbytes.read(tb.pids.values())
        out["tcp"] = {c: tcp[pid] for c, pid in tb.pids.items()}
        out["redis"] = {}
        for name, client in tb.redis.items():
            info = client.info("stats")
            out["redis"][name] = {"in": int(info["total_net_input_bytes"]),
                                  "out": int(info["total_net_output_bytes"])}

    for step in ((process, sockets_and_redis) if cpu_first else (sockets_and_redis, process)):
        step()
    return out


def counter_delta(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    def sub(x: Any, y: Any) -> Any:
        if x is None or y is None:
            return None
        if isinstance(x, dict):
            return {k: sub(x[k], y.get(k)) for k in x}
        return y - x

    return {"window_s": round(b["t"] - a["t"], 6), "cpu_ns": sub(a["cpu_ns"], b["cpu_ns"]),
            "tcp": sockbytes.delta(a["tcp"], b["tcp"]), "io": sub(a["io"], b["io"]),
            "redis": sub(a["redis"], b["redis"])}


def measure_idle(tb: Testbed, seconds: float) -> Dict[str, Any]:
    """The same counters over a window with no migration (the load sender keeps running)."""
    a = read_counters(tb)
    time.sleep(seconds)  # a deliberate measurement window, not a wait for a condition
    return counter_delta(a, read_counters(tb, cpu_first=True))


# -- migrations -------------------------------------------------------------------------------------
def migrate(tb: Testbed, cands: Sequence[str], commit: str, transfer: str,
            timeout: float) -> Tuple[Optional[Dict[str, Any]], Optional[str]]:
    """One migration through the operator API (Fixed ERC for one candidate, else Meta-Migration);
    (record, None) or (None, error text)."""
    from sdnmig import ops

    target = {"fixed": cands[0]} if len(cands) == 1 else {"to": list(cands)}
    try:
        return ops.migrate(tb.bus, tb.dpid, commit=commit, transfer=transfer, timeout=timeout,
                           **target), None
    except Exception as e:  # noqa: BLE001 -- recorded per run, counted at the timeout, reported
        return None, f"{type(e).__name__}: {e}"


def go_home(tb: Testbed, timeout: float, attempts: int = 3) -> Dict[str, Any]:
    """Bring s1 back to c1 (unloaded, unmeasured) and wait for the roles; the quotas come back."""
    from ryu_apps.erc import wire
    from sdnmig import lab

    tb.lift_loads()
    t0 = time.monotonic()
    back: Dict[str, Any] = {"from": None, "attempts": 0}
    try:
        lab.poll(lambda: not tb.bus.exists(wire.lock_key(tb.dpid)), timeout * 2,
                 "the migration lock of s1 to clear")
        back["lock_wait_ms"] = round((time.monotonic() - t0) * 1000, 1)
        while tb.master() != plan.INITIAL and back["attempts"] < attempts:
            back["from"] = tb.master()
            back["attempts"] += 1
            rec, err = migrate(tb, [plan.INITIAL], "phase2", "copy", timeout)
            back.update(outcome=rec["outcome"] if rec else "error", error=err,
                        total_ms=rec.get("total_ms") if rec else None)
        if tb.master() != plan.INITIAL:
            raise RuntimeError(f"could not bring s1 back to {plan.INITIAL}: {back}")
        t1 = time.monotonic()
        tb.settle(timeout * 2)
        back["settle_ms"] = round((time.monotonic() - t1) * 1000, 1)
    finally:
        tb.restore_loads()
    back["ms"] = round((time.monotonic() - t0) * 1000, 1)
    return back


def run_sample(rec: Optional[Dict[str, Any]], err: Optional[str], timeout_s: float) -> Dict[str, Any]:
    """The outcome fields of a run: a run that did not commit counts at the timeout."""
    committed = bool(rec) and rec.get("outcome") == "committed"
    total = rec.get("total_ms") if committed else None
    drain = rec.get("drain_ms") if committed else None
    return {"outcome": rec.get("outcome") if rec else "error", "error": err,
            "timed_out": not committed,
            "total_ms": float(total) if total is not None else timeout_s * 1000.0,
            "drain_ms": float(drain) if drain is not None else None,
            "winner": rec.get("winner") if committed else None,
            "initiator": rec.get("initiator") if rec else plan.INITIAL,
            "phases_ms": rec.get("phases_ms") if rec else None,
            "state_bytes": rec.get("state_bytes") if rec else None, "record": rec}


@dataclass
class Track:
    """One configuration across the rounds: its own random streams, glitch windows and clock."""

    cfg: plan.Config
    pick_rng: random.Random
    glitch_rng: random.Random
    history: Dict[str, List[float]] = field(
        default_factory=lambda: {c: [] for c in plan.CANDIDATES})
    busy_s: float = 0.0
    wall_s: float = 0.0


def run_interleaved(tb: Testbed, configs: Sequence[plan.Config], args: argparse.Namespace,
                    progress: common.Progress, runs: List[Dict[str, Any]], setup: Dict[str, Any],
                    after_round: Callable[[], None]) -> None:
    """Warm-up plus measured runs of every configuration, round-robin: each configuration's i-th
    run comes before any (i+1)-th, so the machine's drift over the run (this VM's timing moves
    by tens of percent over an hour) weighs on every configuration alike, and a ratio compares
    runs made minutes apart, not a quarter of an hour. Fills `runs` and `setup` as it goes."""
    params = glitch.GlitchParams(args.glitch_probability, args.glitch_shape, args.glitch_scale_ms,
                                 args.glitch_cap_ms, args.glitch_prior_ms)
    tracks = [Track(c, random.Random(f"{args.seed}:{c.name}:pick"),
                    random.Random(f"{args.seed}:{c.name}:glitch")) for c in configs]
    bus = tb.ctl.bus
    watcher = (glitch.Glitcher(bus.host, bus.port, bus.password, tb.pids)
               if any(c.glitches for c in configs) else None)
    total = args.warmup + args.runs
    try:
        for i in range(total):
            warm = i < args.warmup
            go_home(tb, args.timeout)
            # Every round: the state stays 1 MB however the learning app's counters grew.
            pad = statepad.pad_state(tb.redis[plan.INITIAL], tb.dpid, args.state_bytes,
                                     args.synthetic_macs, seed=args.seed)
            for t in tracks:
                cfg = t.cfg
                label = (f"{cfg.name}, {'warm-up' if warm else 'run'} "
                         f"{i + 1 - (0 if warm else args.warmup)}/{args.warmup if warm else args.runs}")
                tb.set_loads(dict(zip(plan.CANDIDATES, cfg.loads)))
                if i == 0:
                    setup[cfg.name] = {"state": pad}
                    progress.start(f"{label} (state {pad['total']} bytes, loads "
                                   f"{', '.join(f'{c} {x:.0%}' for c, x in tb.loads.items())})")
                tb.check_alive()
                t0, busy0 = time.monotonic(), common.machine_busy_s()
                cands = (t.pick_rng.choice(cfg.candidates),) if cfg.pick_random else cfg.candidates
                planned = glitch.plan(t.glitch_rng, cands, params) if cfg.glitches and not warm else {}
                windows = {c: glitch.window_ms(t.history, c, params.prior_window_ms) for c in planned}
                run = {"config": cfg.name, "run": i - args.warmup, "warmup": warm,
                       **measured_migration(tb, cfg, args, cands,
                                            watcher if cfg.glitches else None, planned, windows)}
                for c, ms in run["start_to_ack_ms"].items():
                    t.history[c].append(ms)
                run["return"] = go_home(tb, args.timeout)
                if cfg.idle_windows:
                    run["idle"] = measure_idle(tb, run["window_s"])
                runs.append(run)
                t.busy_s += common.machine_busy_s() - busy0
                t.wall_s += time.monotonic() - t0
                progress.finish(f"{label}: {_run_line(run)}")
            after_round()
    finally:
        if watcher is not None:
            watcher.close()
    # Whole-machine CPU (all processes, ours included) during each configuration's runs: a value
    # near the core count says something else competed with the testbed.
    for t in tracks:
        busy = t.busy_s / max(t.wall_s, 1e-9)
        progress.note(f"{t.cfg.name}: machine busy {busy:.2f} of {os.cpu_count()} cores")
        setup[t.cfg.name]["machine_busy_cores"] = round(busy, 3)


def measured_migration(tb: Testbed, cfg: plan.Config, args: argparse.Namespace,
                       cands: Sequence[str], watcher: Optional[glitch.Glitcher],
                       planned: Dict[str, glitch.Glitch], windows: Dict[str, float]) -> Dict[str, Any]:
    """c1 -> cands once, with the glitches planned, between two counter readings."""
    if watcher is not None:
        watcher.arm(planned, windows)
    before = read_counters(tb)
    rec, err = migrate(tb, cands, cfg.commit, cfg.transfer, args.timeout)
    sample = counter_delta(before, read_counters(tb, cpu_first=True))
    fired = watcher.disarm() if watcher is not None else {}
    s2a: Dict[str, float] = {}
    if watcher is not None and rec:
        s2a = watcher.start_to_ack_ms(lambda m: m == rec["mig"])
    return {"candidates": list(cands), "loads": dict(tb.loads), **run_sample(rec, err, args.timeout),
            **sample, "glitches": fired, "start_to_ack_ms": s2a}


def _run_line(run: Dict[str, Any]) -> str:
    g = [f"{c} {x['duration_ms']:.0f}ms" + ("" if x.get("fired") else f" skipped ({x['reason']})")
         for c, x in run["glitches"].items()]
    return (f"{run['outcome']} {run['total_ms']:.0f} ms, winner {run['winner']}"
            + (f", glitch {', '.join(g)}" if g else "") + (f", error {run['error']}" if run["error"] else ""))


# -- results ----------------------------------------------------------------------------------------
def figure_panels(configs: Sequence[plan.Config], runs: Sequence[Dict[str, Any]]) -> List[common.CdfPanel]:
    panels: List[common.CdfPanel] = []
    for panel, lines in sorted(plan.panels(configs).items(), key=lambda kv: _figure_order(kv[0])):
        if panel.startswith("Fig. 9") or panel == "headline":
            continue
        panels.append((panel, {label: analysis.times_ms(runs, name) for label, name in lines.items()},
                       "total migration time (ms)"))
    panels.append(("Fig. 9: CPU during a migration (no imposed load)", analysis.cpu_groups(runs),
                   "CPU (% of one core)"))
    src = {f"{t} k={k}": [b / 1e6 for r in analysis.measured(runs, plan.overhead_name(t, k))
                          if (b := analysis.source_bytes(r)) is not None]
           for t in ("copy", "shared") for k in (1, 2, 3)}
    panels.append(("initial master bytes sent (controller + its Redis)", src, "MB"))
    return panels


def _figure_order(panel: str) -> Tuple[int, str]:
    """'Fig. 10a: ...' -> (10, 'a'), so Fig. 6a, 6b, 8a, 8b, 10a, 10b come in the paper's order."""
    head = panel.split(":")[0].replace("Fig. ", "")
    digits = "".join(ch for ch in head if ch.isdigit())
    return (int(digits) if digits else 99, head[len(digits):])


def parse_args(argv: Any) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_convention_args(p)
    p.add_argument("--runs", type=int, default=None, help="measured runs per configuration "
                   f"(default 1000, as in the paper; {QUICK_RUNS} with --quick)")
    p.add_argument("--warmup", type=int, default=None, help="unmeasured runs first (default 2; 1 quick)")
    p.add_argument("--configs", nargs="*", default=None,
                   help="run only configurations whose name contains one of these")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the testbed's directory (logs, "
                   "Redis files); kept anyway when a run failed or a log shows a problem")
    p.add_argument("--rate", type=float, default=loadgen.DEFAULT_RATE, help="packet-ins per second")
    p.add_argument("--state-bytes", type=int, default=1_000_000, help="state size (DUMP bytes)")
    p.add_argument("--synthetic-macs", type=int, default=1000, help="synthetic MAC entries in the state")
    p.add_argument("--timeout", type=float, default=10.0, help="migration timeout (s)")
    p.add_argument("--period-us", type=int, default=cpuload.PERIOD_US, help="CFS period")
    d = glitch.GlitchParams()
    p.add_argument("--glitch-probability", type=float, default=d.probability)
    p.add_argument("--glitch-shape", type=float, default=d.shape)
    p.add_argument("--glitch-scale-ms", type=float, default=d.scale_ms)
    p.add_argument("--glitch-cap-ms", type=float, default=d.cap_ms)
    p.add_argument("--glitch-prior-ms", type=float, default=d.prior_window_ms,
                   help="glitch window before any START->STATE_ACK was observed")
    args = p.parse_args(argv)
    if args.runs is None:
        args.runs = QUICK_RUNS if args.quick else 1000
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.runs < 1 or args.warmup < 0:
        p.error("--runs must be at least 1 and --warmup at least 0")
    return args


def main(argv: Any = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print(f"{NAME}: needs root (Open vSwitch, Mininet, cgroups, signals)", file=sys.stderr)
        return 2
    from mininet.log import setLogLevel

    setLogLevel("warning")
    # SIGTERM unwinds like Ctrl-C: paused controllers resume, quotas, network and controllers go.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    configs = plan.select(plan.build(), args.configs)
    if not configs:
        print(f"{NAME}: no configuration matches {args.configs}", file=sys.stderr)
        return 2
    progress = common.Progress(NAME, len(configs) * (args.warmup + args.runs))
    runs: List[Dict[str, Any]] = []
    setup: Dict[str, Any] = {}
    workdir = Path(tempfile.mkdtemp(prefix="sdnmig-meta-"))
    tb = Testbed(workdir, args)
    sent: Dict[str, Any] = {}
    problems: List[str] = []
    try:
        tb.start()
        before = tb.packet_in_count()
        wait_packet_ins(tb, before)
        run_interleaved(tb, configs, args, progress, runs, setup,
                        every(PARTIAL_WRITE_S, lambda: _write(args, configs, runs, setup,
                                                              complete=False)))
    finally:
        sent, problems = tb.close()
    doc = _write(args, configs, runs, setup, complete=True, sender=sent, problems=problems)
    png = common.plot_cdf_panels(args.out / f"{NAME}.png", figure_panels(configs, runs),
                                 title="Meta-Migration vs Fixed ERC on real OVS", ncols=3)
    for line in analysis.format_table1(doc["table1"]["copy"], "Table I (copy transfer): median "
                                       "bytes sent / received over the migration"):
        print(line)
    for line in analysis.format_table1(doc["table1"]["shared"], "Beyond Table I: shared transfer"):
        print(line)
    for name, s in doc["summary"].items():
        print(f"{name:<28} n={s['n']:<5} p50={s['p50_ms']} p99={s['p99_ms']} ms (drained: "
              f"p50={s['drained_p50_ms']} p99={s['drained_p99_ms']})  not committed="
              f"{s['timed_out']}  winners={s['winners']}")
    print("the same ratios to the end of the drain:", json.dumps(doc["drained_ratios"]))
    progress.note(f"wrote {args.out / (NAME + '.json')}" + (f" and {png}" if png else ""))
    if problems:
        progress.note(f"controller logs show {len(problems)} problem(s): {problems[0]}")
    common.print_headline(doc["headline"])
    errors = [r for r in runs if r["error"]]
    if errors or problems or args.keep:
        progress.note(f"controller and Redis logs kept in {workdir}")
    else:  # the instances' append-only files grow by the state size per migration
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if errors or problems else 0


def every(period_s: float, fn: Callable[[], Any],
          clock: Callable[[], float] = time.monotonic) -> Callable[[], None]:
    """fn, but at most once per period (the first call runs it)."""
    last = [float("-inf")]

    def call() -> None:
        if clock() - last[0] >= period_s:
            last[0] = clock()
            fn()

    return call


def wait_packet_ins(tb: Testbed, before: int) -> None:
    """The sender's frames reach c1 as packet-ins (else nothing below would be measured)."""
    from sdnmig import lab

    lab.poll(lambda: tb.packet_in_count() >= before + 20, 10.0, "packet-ins from the sender at c1")


def _write(args: argparse.Namespace, configs: Sequence[plan.Config], runs: List[Dict[str, Any]],
           setup: Dict[str, Any], complete: bool, **extra: Any) -> Dict[str, Any]:
    summary = {c.name: analysis.config_summary(runs, c.name) for c in configs}
    headline = analysis.headline(runs, args.runs)
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    configurations = [dict(asdict(c), setup=setup.get(c.name)) for c in configs]
    doc = common.result_document(
        NAME, args.quick, configurations, runs, summary, headline, complete=complete,
        parameters=params, counters=COUNTERS,
        table1={"copy": analysis.table1(runs, "copy"), "shared": analysis.table1(runs, "shared")},
        cpu_pct=analysis.cpu_groups(runs), drained_ratios=analysis.drained_ratios(runs), **extra)
    common.write_json(args.out / f"{NAME}.json", doc)
    return doc


if __name__ == "__main__":
    sys.exit(main())
