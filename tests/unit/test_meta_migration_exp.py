"""The Meta-Migration experiment's pure parts: glitch draws and scheduling, CPU quotas, state
padding (checked against a private redis-server), the configuration plan, and the statistics,
Table I and headline computed from raw per-run samples. No root, no network but loopback Redis."""
from __future__ import annotations

import os
import random
import shutil
import signal
import statistics
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from experiments import bustap, common, cpuload, glitch, loadgen, sockbytes, statepad
from experiments import meta_analysis as analysis
from experiments import meta_plan as plan
from experiments.meta_migration import counter_delta, run_sample
from sdnmig import instances


# -- glitches -------------------------------------------------------------------------------------

def test_pareto_draws_lie_between_scale_and_cap() -> None:
    rng = random.Random(3)
    xs = [glitch.pareto_ms(rng, 1.5, 20.0, 2000.0) for _ in range(20000)]
    assert min(xs) >= 20.0 and max(xs) == 2000.0  # the cap is reached and never passed
    # median of Pareto(a, k) is k * 2**(1/a)
    assert statistics.median(xs) == pytest.approx(20.0 * 2 ** (1 / 1.5), rel=0.05)
    # P(X > cap) = (k / cap)**a = 0.001 for these parameters
    assert sum(x == 2000.0 for x in xs) / len(xs) == pytest.approx(0.001, abs=0.001)


def test_pareto_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        glitch.pareto_ms(random.Random(1), 0, 20, 100)
    with pytest.raises(ValueError):
        glitch.pareto_ms(random.Random(1), 1.5, -1, 100)


def test_glitch_plan_is_per_candidate_with_the_given_probability() -> None:
    rng = random.Random(7)
    params = glitch.GlitchParams(probability=0.1)
    counts = {c: 0 for c in plan.CANDIDATES}
    for _ in range(5000):
        for c, g in glitch.plan(rng, plan.CANDIDATES, params).items():
            counts[c] += 1
            assert 0.0 <= g.fraction < 1.0 and params.scale_ms <= g.duration_ms <= params.cap_ms
    for n in counts.values():
        assert n / 5000 == pytest.approx(0.1, abs=0.02)
    assert glitch.plan(rng, plan.CANDIDATES, glitch.GlitchParams(probability=0.0)) == {}
    assert set(glitch.plan(rng, plan.CANDIDATES, glitch.GlitchParams(probability=1.0))) == set(
        plan.CANDIDATES)


def test_glitch_plan_consumes_the_same_draws_whatever_the_outcome() -> None:
    """A run's plan depends only on the seed and the run's position, not on earlier outcomes."""
    a, b = random.Random(11), random.Random(11)
    glitch.plan(a, ["c2", "c3"], glitch.GlitchParams(probability=0.0))
    glitch.plan(b, ["c2", "c3"], glitch.GlitchParams(probability=1.0))
    assert a.random() == b.random()


def test_same_seed_same_plan() -> None:
    draw = lambda: [glitch.plan(r, plan.CANDIDATES, glitch.GlitchParams(probability=0.5))  # noqa: E731
                    for r in [random.Random("1:meta")] for _ in range(20)]
    assert draw() == draw()


def test_glitch_window_is_the_running_median_then_pooled_then_prior() -> None:
    hist = {"c2": [10.0, 30.0, 20.0], "c3": [], "c4": [100.0]}
    assert glitch.window_ms(hist, "c2", 99.0) == 20.0
    assert glitch.window_ms(hist, "c4", 99.0) == 100.0
    assert glitch.window_ms(hist, "c3", 99.0) == 25.0  # pooled: median of 10, 20, 30, 100
    assert glitch.window_ms({"c2": []}, "c2", 99.0) == 99.0


@pytest.mark.parametrize("acked_at,fire_at,fire", [(None, 5.0, True), (4.0, 5.0, False),
                                                   (5.0, 5.0, False), (6.0, 5.0, True)])
def test_a_glitch_is_skipped_when_the_ack_came_first(acked_at: Optional[float], fire_at: float,
                                                      fire: bool) -> None:
    assert glitch.should_fire(acked_at, fire_at) is fire


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_pause_stops_then_always_continues_a_real_process() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        seen: List[str] = []

        def during(_: float) -> None:
            common_deadline = time.monotonic() + 2
            while _state(proc.pid) != "T" and time.monotonic() < common_deadline:
                time.sleep(0.001)
            seen.append(_state(proc.pid))
            raise KeyboardInterrupt  # an interrupted wait must still resume the process

        with pytest.raises(KeyboardInterrupt):
            glitch.pause(proc.pid, 0.05, sleep=during)
        assert seen == ["T"]
        assert _state(proc.pid) in ("S", "R")
        assert glitch.pause(proc.pid, 0.02) >= 0.02
    finally:
        proc.kill()
        proc.wait()


# -- CPU quotas -----------------------------------------------------------------------------------

@pytest.mark.parametrize("load,quota", [(0.9, 1000), (0.1, 9000), (0.5, 5000), (0.75, 2500),
                                        (0.0, -1)])
def test_quota_leaves_one_minus_load_of_a_core(load: float, quota: int) -> None:
    assert cpuload.quota_us(load) == quota


def test_a_load_the_period_cannot_express_is_refused_not_weakened() -> None:
    with pytest.raises(ValueError, match="minimum"):
        cpuload.quota_us(0.95)
    assert cpuload.quota_us(0.95, period_us=100_000) == 5000


@pytest.mark.parametrize("load", [-0.1, 1.0, 2.0])
def test_quota_rejects_impossible_loads(load: float) -> None:
    with pytest.raises(ValueError):
        cpuload.quota_us(load)


def test_cpu_cgroup_is_read_from_the_cpu_hierarchy(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(
        "4:memory:/x\n2:cpu,cpuacct:/user.slice\n0::/\n")
    assert cpuload.cpu_cgroup_of(42, proc=tmp_path) == "/user.slice"
    (tmp_path / "42" / "cgroup").write_text("0::/only-v2\n")
    assert cpuload.cpu_cgroup_of(42, proc=tmp_path) == "/"


def test_cpu_quota_files_on_a_stand_in_hierarchy(tmp_path: Path) -> None:
    """What apply and set_load write (the real cgroupfs, where rmdir works on a group that still
    shows its control files, is exercised by the experiment and its manual check)."""
    q = cpuload.CpuQuota("sdnmig-t-c2", (os.getpid(),), root=tmp_path)
    q.remove()  # never made: nothing to undo
    q.apply(0.9)
    assert (q.dir / "cpu.cfs_quota_us").read_text() == "1000"
    assert (q.dir / "cpu.cfs_period_us").read_text() == "10000"
    assert (q.dir / "cgroup.procs").read_text() == str(os.getpid())
    assert q.load == 0.9
    q.set_load(0.0)
    assert (q.dir / "cpu.cfs_quota_us").read_text() == "-1"
    q.set_load(0.5)
    assert (q.dir / "cpu.cfs_quota_us").read_text() == "5000"
    with pytest.raises(ValueError):
        cpuload.CpuQuota("a/b", (1,), root=tmp_path)
    with pytest.raises(ValueError):
        cpuload.CpuQuota("empty", (), root=tmp_path)


# -- state padding --------------------------------------------------------------------------------

@pytest.mark.parametrize("n,expected", [(0, 12), (63, 75), (64, 77), (16383, 16396),
                                        (16384, 16400), (1_000_000, 1_000_016)])
def test_string_dump_length(n: int, expected: int) -> None:
    assert statepad.string_dump_len(n) == expected


@pytest.mark.parametrize("others", [0, 5000, 999_990, 1_000_000, 1_200_000])
@pytest.mark.parametrize("target", [1_000_000, 76, 16399, 77, 20])
def test_pad_fills_the_budget_as_closely_as_dump_steps_allow(target: int, others: int) -> None:
    n = statepad.pad_length(target, others)
    if n == 0:
        assert target - others < statepad.string_dump_len(1)
        return
    assert others + statepad.string_dump_len(n) <= target
    assert others + statepad.string_dump_len(n + 1) > target  # the longest that fits
    assert target - (others + statepad.string_dump_len(n)) <= 4  # within a length-prefix step


def test_synthetic_macs_are_unicast_local_and_distinct() -> None:
    macs = {statepad.synthetic_mac(i) for i in range(5000)}
    assert len(macs) == 5000
    for m in list(macs)[:50]:
        first = int(m.split(":")[0], 16)
        assert not first & 1 and first & 2


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Any]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    redis = pytest.importorskip("redis")
    port = instances.free_ports(1, 47000)[0]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield client
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


@pytest.mark.parametrize("n", [0, 10, 63, 64, 100, 16383, 16384, 100_000])
def test_string_dump_length_matches_real_redis(private_redis: Any, n: int) -> None:
    private_redis.set("k", random.Random(n).randbytes(n))
    assert len(private_redis.dump("k")) == statepad.string_dump_len(n)


@pytest.mark.parametrize("target,synthetic", [(1_000_000, 1000), (200_000, 0), (50_000, 300)])
def test_pad_state_reaches_the_target_on_real_redis(private_redis: Any, target: int,
                                                    synthetic: int) -> None:
    dpid = 0x2A
    prefix = statepad.prefix_of(dpid)
    private_redis.hset(prefix + "l2:macs", "00:00:00:00:00:01", 1)  # a real learnt entry
    private_redis.hset(prefix + "l2:stats", mapping={"packet_in": 12, "flooded": 12})
    private_redis.set("sw:0000000000000099:pad", b"x" * 5000)  # another switch: not counted
    got = statepad.pad_state(private_redis, dpid, target, synthetic, seed=1)
    assert got["total"] == statepad.state_size(private_redis, dpid)
    assert target - 4 <= got["total"] <= target
    assert private_redis.hlen(prefix + "l2:macs") == synthetic + 1
    again = statepad.pad_state(private_redis, dpid, target, synthetic, seed=1)
    assert again["total"] == got["total"]  # idempotent


def test_pad_state_keeps_an_oversized_state(private_redis: Any) -> None:
    got = statepad.pad_state(private_redis, 1, 1000, 500)
    assert got["pad"] == 0 and got["total"] > 1000
    assert private_redis.exists("sw:0000000000000001:pad") == 0


# -- the bus tap ----------------------------------------------------------------------------------

def _push(channel: bytes, data: bytes) -> bytes:
    parts = [b"pmessage", b"erc:*", channel, data]
    return b"*4\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in parts)


def test_bus_tap_reads_headers_and_skips_payloads_across_fragments() -> None:
    big = b'{"type":"STATE","mig":"m","dpid":1,"src":"c1","seq":0,"body":{}}\n' + bytes(300_000)
    stream = (b"+OK\r\n" + b"*3\r\n$10\r\npsubscribe\r\n$5\r\nerc:*\r\n:1\r\n"
              + _push(b"erc:c2", big) + _push(b"erc:c1", b'{"type":"STATE_ACK"}'))
    server = socket.create_server(("127.0.0.1", 0))
    got_cmds: List[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(2)
            got_cmds.append(conn.recv(4096))
            for i in range(0, len(stream), 7001):  # odd fragments: every boundary is crossed
                conn.sendall(stream[i:i + 7001])
            time.sleep(0.5)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    stop = threading.Event()
    tap = bustap.BusTap("127.0.0.1", server.getsockname()[1], "pw", "erc:*", stop.is_set)
    try:
        msgs = tap.messages()
        assert next(msgs) == ("erc:c2", big.split(b"\n")[0])
        assert next(msgs) == ("erc:c1", b'{"type":"STATE_ACK"}')
        stop.set()
        with pytest.raises(bustap.TapClosed):
            next(msgs)
    finally:
        tap.close()
        server.close()
        t.join(2)
    assert got_cmds[0].startswith(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n")


def test_bus_tap_on_real_redis(private_redis: Any) -> None:
    port = private_redis.connection_pool.connection_kwargs["port"]
    stop = threading.Event()
    tap = bustap.BusTap("127.0.0.1", port, None, "erc:*", stop.is_set)
    try:
        msgs = tap.messages()
        deadline = time.monotonic() + 5
        while private_redis.pubsub_numpat() < 1:
            assert time.monotonic() < deadline, "the tap never subscribed"
            time.sleep(0.01)
        private_redis.publish("erc:c3", b'{"type":"START"}\n' + random.Random(1).randbytes(1 << 20))
        private_redis.publish("other", b"not for us")
        private_redis.publish("erc:c1", b"x")
        assert next(msgs) == ("erc:c3", b'{"type":"START"}')
        assert next(msgs) == ("erc:c1", b"x")
    finally:
        stop.set()
        tap.close()


# -- the load sender ------------------------------------------------------------------------------

def test_sender_destinations_are_fresh_unicast_and_local() -> None:
    macs = [loadgen.dst_mac(7, n) for n in range(10000)]
    assert len(set(macs)) == len(macs)
    assert all(not m[0] & 1 and m[0] & 2 and len(m) == 6 for m in macs)
    assert loadgen.dst_mac(7, 1) != loadgen.dst_mac(8, 1)


def test_sender_frame_layout() -> None:
    f = loadgen.frame(loadgen.dst_mac(1, 5), bytes.fromhex("000000000001"), 5, 123)
    assert len(f) == loadgen.MIN_FRAME
    assert f[12:14] == bytes.fromhex("88b5")
    assert int.from_bytes(f[14:22], "big") == 5 and int.from_bytes(f[22:30], "big") == 123


def test_send_times_are_a_poisson_process() -> None:
    gen = loadgen.send_times(random.Random(2), 200.0, 100.0)
    ts = [next(gen) for _ in range(20000)]
    gaps = [b - a for a, b in zip([100.0] + ts, ts)]
    assert all(g > 0 for g in gaps)
    assert statistics.fmean(gaps) == pytest.approx(1 / 200, rel=0.03)
    assert statistics.pstdev(gaps) == pytest.approx(1 / 200, rel=0.05)  # exponential: sd = mean
    with pytest.raises(ValueError):
        next(loadgen.send_times(random.Random(1), 0, 0))


# -- the plan -------------------------------------------------------------------------------------

def test_plan_names_and_parameters_are_unique_and_cover_every_figure() -> None:
    configs = plan.build()
    names = [c.name for c in configs]
    assert len(set(names)) == len(names)
    assert len({c.key for c in configs}) == len(configs)
    for must in (plan.HEAD_META, plan.HEAD_FIXED_LOW, plan.HEAD_FIXED_RANDOM, plan.HEAD_CLEAN,
                 plan.overhead_name("copy", 3), plan.overhead_name("shared", 1)):
        assert must in names
    panels = plan.panels(configs)
    assert {p.split(":")[0] for p in panels} >= {"Fig. 6a", "Fig. 6b", "Fig. 8a", "Fig. 8b",
                                                  "Fig. 10a", "Fig. 10b", "Fig. 9 / Table I"}
    assert len(panels["Fig. 6b: 10% low, 90% high"]) == 7
    assert len(panels["Fig. 10a: all candidates 75%"]) == 3


def test_shared_configurations_are_run_once_with_every_tag() -> None:
    by_name = {c.name: c for c in plan.build()}
    all75 = by_name["meta3 50/75 0L3H"]
    assert all75.loads == (0.75, 0.75, 0.75)
    assert {t[0].split(":")[0] for t in all75.tags} == {"Fig. 6a", "Fig. 8a", "Fig. 10a"}
    assert "k3 all75" not in by_name


def test_headline_configuration_parameters() -> None:
    by_name = {c.name: c for c in plan.build()}
    meta = by_name[plan.HEAD_META]
    assert (meta.loads, meta.candidates, meta.commit, meta.glitches) == (
        (0.10, 0.90, 0.90), plan.CANDIDATES, "phase2", True)
    assert by_name[plan.HEAD_FIXED_LOW].candidates == ("c2",)
    assert by_name[plan.HEAD_FIXED_LOW].load_of("c2") == 0.10
    assert by_name[plan.HEAD_FIXED_RANDOM].pick_random
    clean = by_name[plan.HEAD_CLEAN]
    assert (clean.candidates, clean.glitches, clean.load_of("c2")) == (("c2",), False, 0.10)
    for k in (1, 2, 3):
        o = by_name[plan.overhead_name("shared", k)]
        assert (o.k, o.transfer, o.loads, o.glitches, o.idle_windows) == (
            k, "shared", (0.0, 0.0, 0.0), False, True)


def test_select_filters_by_name() -> None:
    configs = plan.build()
    assert plan.select(configs, None) == configs
    assert {c.name for c in plan.select(configs, ["overhead shared"])} == {
        plan.overhead_name("shared", k) for k in (1, 2, 3)}


# -- samples and statistics -----------------------------------------------------------------------

def test_a_run_that_does_not_commit_counts_at_its_timeout() -> None:
    ok = run_sample({"mig": "m", "outcome": "committed", "total_ms": 123.4, "winner": "c3",
                     "initiator": "c1", "phases_ms": {"phase1": 1}, "state_bytes": 10,
                     "drain_ms": 4.5}, None, 10)
    assert (ok["total_ms"], ok["timed_out"], ok["winner"], ok["drain_ms"]) == (
        123.4, False, "c3", 4.5)
    aborted = run_sample({"mig": "m", "outcome": "aborted", "total_ms": 9000.0, "winner": None,
                          "drain_ms": 1.0}, None, 10)
    assert (aborted["total_ms"], aborted["timed_out"], aborted["outcome"]) == (10000.0, True, "aborted")
    assert aborted["drain_ms"] is None
    err = run_sample(None, "NoAnswer: no answer", 7.5)
    assert (err["total_ms"], err["timed_out"], err["outcome"], err["initiator"]) == (
        7500.0, True, "error", "c1")


def test_counter_delta() -> None:
    sock = ("127.0.0.1:1", "127.0.0.1:2")
    a = {"t": 1.0, "cpu_ns": {"c1": 100, "c2": None}, "io": {"c1": {"rchar": 5, "wchar": 7}},
         "tcp": {"c1": {sock: (10, 20)}}, "redis": {"bus": {"in": 1, "out": 2}}}
    b = {"t": 1.5, "cpu_ns": {"c1": 400, "c2": 9}, "io": {"c1": {"rchar": 15, "wchar": 27}},
         "tcp": {"c1": {sock: (110, 25), ("127.0.0.1:3", "127.0.0.1:4"): (7, 8)}},
         "redis": {"bus": {"in": 11, "out": 32}}}
    d = counter_delta(a, b)
    assert d == {"window_s": 0.5, "cpu_ns": {"c1": 300, "c2": None},
                 "tcp": {"c1": {"sent": 107, "received": 13}},
                 "io": {"c1": {"rchar": 10, "wchar": 20}}, "redis": {"bus": {"in": 10, "out": 30}}}


SS_OUTPUT = """\
ESTAB 0      0      127.0.0.1:54318 127.0.0.1:40539 users:(("osken-manager",pid=22418,fd=4))
\t bbr wscale:9,9 rto:204 cwnd:18 bytes_sent:104430 bytes_acked:104431 bytes_received:7941 segs_out:452
ESTAB 0      0      127.0.0.1:60328 127.0.0.1:20537 users:(("ovs-vswitchd",pid=31340,fd=47))
\t bbr wscale:9,9 bytes_sent:1936 bytes_acked:1937 bytes_received:1624
ESTAB 0      1090   127.0.0.1:54320 127.0.0.1:40539 users:(("osken-manager",pid=22418,fd=5))
\t bbr wscale:9,9 rto:204 cwnd:18 bytes_acked:1 segs_out:1
TIME-WAIT 0 0 127.0.0.1:50000 127.0.0.1:40539
\t cubic bytes_sent:99
"""


def test_socket_bytes_from_ss_output() -> None:
    got = sockbytes.parse(SS_OUTPUT, [22418, 999])
    assert got == {22418: {("127.0.0.1:54318", "127.0.0.1:40539"): (104430, 7941),
                           ("127.0.0.1:54320", "127.0.0.1:40539"): (0, 0)}, 999: {}}
    later = {22418: {("127.0.0.1:54318", "127.0.0.1:40539"): (104500, 8000),
                     ("127.0.0.1:54320", "127.0.0.1:40539"): (0, 0),
                     ("127.0.0.1:6", "127.0.0.1:7"): (5, 6)}}  # opened in between
    assert sockbytes.delta(got, later) == {22418: {"sent": 75, "received": 65}}
    queues_moved = SS_OUTPUT.replace("ESTAB 0      1090", "ESTAB 7      0   ")
    assert sockbytes.parse(queues_moved, [22418, 999]) == got  # named by its addresses only
    reused = {22418: {("127.0.0.1:54318", "127.0.0.1:40539"): (3, 4)}}  # a new socket, same pair
    assert sockbytes.delta(got, reused) == {22418: {"sent": 3, "received": 4}}


def _run(config: str, total_ms: float, *, winner: Optional[str] = "c2", cands=("c2", "c3", "c4"),
         warmup: bool = False, cpu: Optional[Dict[str, int]] = None, window: float = 0.1,
         sent: int = 0, redis_out: int = 0, idle: Optional[Dict[str, Any]] = None,
         timed_out: bool = False) -> Dict[str, Any]:
    ctl = plan.CONTROLLERS
    return {"config": config, "warmup": warmup, "total_ms": total_ms, "winner": winner,
            "timed_out": timed_out, "outcome": "aborted" if timed_out else "committed",
            "initiator": "c1", "candidates": list(cands), "window_s": window,
            "cpu_ns": cpu or {c: 0 for c in ctl},
            "tcp": {c: {"received": 1000 * (i + 1), "sent": sent if c == "c1" else 10 * (i + 1)}
                    for i, c in enumerate(ctl)},
            "redis": {c: {"in": 3, "out": redis_out if c == "c1" else 4} for c in ctl},
            "glitches": {}, "idle": idle}


def test_percentiles_and_ratio() -> None:
    xs = list(range(1, 101))
    assert analysis.pct(xs, 50) == 50.5
    assert analysis.pct(xs, 99) == pytest.approx(99.01)
    assert analysis.pct([], 50) is None
    assert analysis.ratio(1.0, 4.0) == 0.25
    assert analysis.ratio(1.0, 0) is None and analysis.ratio(None, 1.0) is None


def test_roles_of_a_run() -> None:
    r = _run("x", 1, winner="c3", cands=("c2", "c3"))
    assert analysis.roles(r) == {"c1": "initial master", "c3": "new master", "c2": "non winner",
                                 "c4": "not active"}
    aborted = _run("x", 1, winner=None, cands=("c2",), timed_out=True)
    assert analysis.roles(aborted)["c2"] == "non winner"


def test_headline_from_raw_samples() -> None:
    idle = lambda ns: {"window_s": 0.1, "cpu_ns": {"c1": ns}, "io": {}, "redis": {}}  # noqa: E731
    runs = [_run(plan.HEAD_META, 999, warmup=True)]  # warm-ups never count
    runs += [_run(plan.HEAD_META, t) for t in (100, 110, 120, 130, 200)]
    runs += [_run(plan.HEAD_FIXED_RANDOM, t, cands=("c3",)) for t in (90, 150, 300, 400, 1000)]
    runs += [_run(plan.HEAD_FIXED_LOW, t, cands=("c2",)) for t in (80, 90, 100, 110, 120)]
    runs += [_run(plan.HEAD_CLEAN, t, cands=("c2",)) for t in (50, 60, 70)]
    runs += [_run(plan.overhead_name("copy", 3), 10, cpu={"c1": ns}, window=0.1,
                  idle=idle(ns // 4)) for ns in (4_000_000, 8_000_000, 6_000_000)]
    runs += [_run(plan.overhead_name("shared", 1), 10, cands=("c2",), sent=1_000_000,
                  redis_out=1_000_000)] * 2
    runs += [_run(plan.overhead_name("shared", 3), 10, sent=1_100_000, redis_out=1_000_000)] * 2
    h = analysis.headline(runs, 5)
    p99_meta = analysis.pct([100, 110, 120, 130, 200], 99)
    p99_rand = analysis.pct([90, 150, 300, 400, 1000], 99)
    assert h["p99_ratio_meta3_vs_fixed_random"] == round(p99_meta / p99_rand, 3)
    assert h["p50_ratio_meta3_vs_fixed_low"] == round(120 / 100, 3)
    # c1 CPU: medians 6 ms / 0.1 s = 6 % under migration, 1.5 % idle
    assert h["cpu_ratio_master_k3_vs_idle"] == 4.0
    assert h["source_bytes_ratio_shared_k3_vs_k1"] == 1.05
    assert h["fixed_p50_ms"] == 60.0
    assert h["runs_per_config"] == 5
    assert list(h) == ["p99_ratio_meta3_vs_fixed_random", "p50_ratio_meta3_vs_fixed_low",
                       "cpu_ratio_master_k3_vs_idle", "source_bytes_ratio_shared_k3_vs_k1",
                       "fixed_p50_ms", "runs_per_config"]


def test_headline_with_missing_configurations_is_null_not_an_error() -> None:
    h = analysis.headline([], 3)
    assert h["p99_ratio_meta3_vs_fixed_random"] is None and h["fixed_p50_ms"] is None
    assert set(analysis.drained_ratios([]).values()) == {None}


def test_drained_ratios_add_each_runs_drain_to_its_time() -> None:
    runs = []
    for name, total, drain in ((plan.HEAD_META, 20.0, 5.0), (plan.HEAD_FIXED_RANDOM, 40.0, 40.0),
                               (plan.HEAD_FIXED_LOW, 10.0, 2.5), (plan.HEAD_CLEAN, 14.0, 1.0)):
        runs.append(dict(_run(name, total), drain_ms=drain))
    assert analysis.drained_ratios(runs) == {"p99_ratio_meta3_vs_fixed_random": 0.312,
                                             "p50_ratio_meta3_vs_fixed_low": 2.0,
                                             "fixed_p50_ms": 15.0}


def test_timed_out_runs_stay_in_the_tail() -> None:
    runs = [_run("c", t) for t in (100, 100, 100)] + [_run("c", 10000, timed_out=True, winner=None)]
    for r in runs[:3]:
        r["drain_ms"] = 20.0
    s = analysis.config_summary(runs, "c")
    assert s["timed_out"] == 1 and s["n"] == 4
    assert s["p99_ms"] > 9000
    assert s["drained_p50_ms"] == 120.0 and s["drained_p99_ms"] > 9000, "no drain: the timeout"
    assert s["outcomes"] == {"committed": 3, "aborted": 1}


def test_table1_medians_per_role() -> None:
    idle = {"window_s": 0.1, "cpu_ns": {}, "tcp": {"c1": {"received": 50, "sent": 60},
                                                   "c2": {"received": 5, "sent": 6}},
            "redis": {"c1": {"in": 1, "out": 2}}}
    runs = [_run(plan.overhead_name("copy", 2), 10, winner="c3", cands=("c2", "c3"),
                 sent=s, idle=idle) for s in (1_000_000, 3_000_000, 2_000_000)]
    t = analysis.table1(runs)
    assert t["No Mig."]["initial master"]["ctl_sent"] == 60
    assert t["No Mig."]["initial master"]["redis_sent"] == 2
    assert t["2"]["initial master"]["ctl_sent"] == 2_000_000
    assert t["2"]["new master"]["ctl_recv"] == 3000  # c3 is the third controller
    assert t["2"]["non winner"]["ctl_recv"] == 2000
    assert t["2"]["not active"]["ctl_recv"] == 4000
    assert t["1"]["initial master"]["ctl_sent"] is None  # no runs: empty cells
    lines = analysis.format_table1(t, "Table I")
    assert lines[0] == "Table I" and any("2.00MB" in ln for ln in lines)


def test_cpu_groups_for_fig9() -> None:
    idle = {"window_s": 0.5, "cpu_ns": {"c1": 5_000_000}}
    runs = [_run(plan.overhead_name("copy", 1), 10, cands=("c2",), window=0.5,
                 cpu={"c1": 10_000_000, "c2": 20_000_000, "c3": 0, "c4": 0}, idle=idle)]
    g = analysis.cpu_groups(runs)
    assert g == {"initial master, no migration": [1.0], "initial master, k=1": [2.0],
                 "new master, k=1": [4.0]}


def test_cdf_plot_is_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = common.plot_cdf_panels(tmp_path / "x.png", [("a", {"one": [1, 2, 3], "two": []}, "ms"),
                                                      ("b", {"x": [5.0]}, "%")], title="t")
    assert out is not None and out.stat().st_size > 1000


def test_figure_panels_come_in_the_papers_order() -> None:
    from experiments.meta_migration import _figure_order

    names = sorted(plan.panels(plan.build()), key=_figure_order)
    assert [n.split(":")[0] for n in names] == ["Fig. 6a", "Fig. 6b", "Fig. 8a", "Fig. 8b",
                                                 "Fig. 9 / Table I", "Fig. 10a", "Fig. 10b",
                                                 "headline"]


def test_meta_tail_describes_the_slowest_runs_and_the_bound() -> None:
    from experiments import meta_tail

    runs = []
    for i in range(99):
        runs.append(dict(_run(plan.HEAD_META, 20.0 + i * 0.01), drain_ms=1.0,
                         loads={"c2": 0.1, "c3": 0.9, "c4": 0.9},
                         record={"marks_ms": {"decide": 15.0, "end": 20.0}}))
    runs.append(dict(_run(plan.HEAD_META, 100.0, winner="c3"), drain_ms=30.0,
                     loads={"c2": 0.1, "c3": 0.9, "c4": 0.9},
                     glitches={"c2": {"fired": True}, "c4": {"fired": False}},
                     record={"marks_ms": {"decide": 70.0, "end": 100.0, "drained": 130.0}}))
    facts = meta_tail.tail_facts(runs, plan.HEAD_META)
    assert facts["n"] == 100 and facts["tail_runs"] == 1 and facts["tail_from_ms"] == 100.0
    assert facts["tail_winners"] == {"c3 (90%)": 1} and facts["tail_least_loaded_paused"] == 1
    assert facts["tail_median_marks_ms"] == {"decide": 70.0, "switched": None, "end": 100.0,
                                             "drained": 130.0}
    assert facts["drained_p50_ms"] == 21.495 and facts["drained_p99_ms"] > facts["p99_ms"]
    assert meta_tail.tail_facts(runs, "nothing") == {"n": 0}
    runs += [_run(f"fixed-high {plan.HEAD_PAIR}", t) for t in (80.0, 90.0, 100.0)]
    assert meta_tail.bound(runs) == {"meta3_p99_ms": facts["p99_ms"], "fixed_high_p50_ms": 90.0,
                                     "fixed_random_p99_ms": None}


def test_partial_results_are_written_at_most_once_a_period() -> None:
    from experiments.meta_migration import every

    now, calls = [0.0], []
    f = every(60.0, lambda: calls.append(now[0]), clock=lambda: now[0])
    for t in (0.0, 30.0, 59.9, 60.0, 61.0, 130.0):
        now[0] = t
        f()
    assert calls == [0.0, 60.0, 130.0]
