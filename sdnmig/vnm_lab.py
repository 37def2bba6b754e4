"""The VNM testbed (topologies.testbeds.VnmTopo) on a bench: controller config, the layout of the
two networks as Mininet wired them, commands, host moves and tunnel counters. Shared by the
integration tests (and the experiment and demo to come).

The layout is read from Mininet's own view of the links (`port_of`), which is what a test should
check the planner (`sdnmig vnm prepare`, from Open vSwitch's view) against.

`migration_run` is one whole run for experiments/vnm.py and the demo: a fresh controller and
network with every link capped (HTB), traffic between h1 and h2 (iperf3 TCP, or iperf3 UDP plus
a ping) and the three phases' commands on a schedule, each phase held `phase_s` after its command
answered. A baseline run (no algorithm) keeps the same schedule and gives no command.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import signal
import subprocess
import tempfile
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import redis

from lime_shim import client
from ryu_apps.vnm.core import OPS_CHANNEL
from sdnmig.lab import finish_host_move, poll, prepare_host_move, unique_prefix
from sdnmig.lime_lab import OF15, Bench, port_of, reach_all, start_on
from sdnmig.vnm_phases import COMMANDS, summarise_run
from topologies.testbeds import VnmTopo

APPS = ("lime", "vnm", "pathflip")
INDEX = (1, 2, 3, 4)
HOSTS = {"h1": 1, "h2": 4}       # host -> the index of its switch in each network
OLD, NEW, TUNNEL = 0x10, 0x20, 0x30


def old(i: int) -> int:
    return OLD + i


def new(i: int) -> int:
    return NEW + i


def start(controllers: Any, make_net: Callable[..., Any], bw: float = 0,
          apps: Tuple[str, ...] = APPS, platform: str = "os_ken", **conf: str) -> Any:
    """(topo, controller instance, started net): every bridge ours, the new network kept as
    LIME spares, the tunnel switch hidden from the apps, pathflip on the old network's paths."""
    topo = VnmTopo(prefix=unique_prefix(), bw=bw)
    p = topo.prefix

    def port(a: str, b: str) -> int:
        return topo.port(p + a, p + b)[0]
    edge = [(port(f"o{i}", "o2"), port(f"o{i}", "o3"), port(f"o{i}", h))
            for h, i in HOSTS.items()]  # up, down, host
    if len(set(edge)) != 1:
        raise AssertionError(f"the edge switches are wired differently: {edge}")
    extra = {"events": "lime",
             "lime_spares": ",".join(hex(new(i)) for i in INDEX),
             "lime_reserved": ",".join(f"{old(i):#x}:{port(f'o{i}', 't0')}" for i in INDEX),
             "lime_hidden": hex(TUNNEL),
             "pathflip_switches": ",".join(hex(old(i)) for i in INDEX),
             "pathflip_ports": ",".join(str(x) for x in edge[0]), **conf}
    c1, net = start_on(controllers, make_net, topo, apps, platform, extra, shaped=bool(bw))
    return topo, c1, net


def layout(topo: Any, net: Any) -> Dict[str, Any]:
    """The layout document (ryu_apps.vnm.core) of the running testbed."""
    p = topo.prefix

    def port(a: str, b: str) -> int:
        return port_of(net, p + a, p + b)
    up = {i: [port(f"n{i}", "t0"), port(f"o{i}", "t0")] for i in INDEX}
    steps = []
    for i in INDEX:
        ports = {port(f"o{i}", f"o{j}"): port(f"n{i}", f"n{j}") for j in INDEX
                 if j != i and net.linksBetween(net.get(f"{p}o{i}"), net.get(f"{p}o{j}"))}
        tunnels = {port(f"o{i}", h): up[i] for h, at in HOSTS.items() if at == i}
        steps.append({"switch": old(i), "onto": new(i), "ports": ports, "tunnels": tunnels})
    return {"pairs": {hex(old(i)): hex(new(i)) for i in INDEX},
            "tunnel_switch": hex(TUNNEL),
            "patch": {hex(old(i)): [port("t0", f"o{i}"), port("t0", f"n{i}")] for i in INDEX},
            "uplinks": {hex(old(i)): [up[i][1], up[i][0]] for i in INDEX},
            "steps": steps,
            "hosts": {h: {"switch": old(i), "port": port(f"o{i}", h), "onto": new(i),
                          "onto_port": port(f"n{i}", h)} for h, i in HOSTS.items()}}


def vnm_op(inst: Any, timeout: float = 30.0, **req: Any) -> Dict[str, Any]:
    """One command to the instance's VNM app, and its answer."""
    r = redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password,
                    protocol=2)
    try:
        return client.request(r, req, timeout, channel=OPS_CHANNEL,
                              who="the VNM migrator (app 'vnm')")
    finally:
        r.close()


def migrate(inst: Any, topo: Any, net: Any, name: str) -> Dict[str, Any]:
    """A VM migration's stand-in: the host's interface to the new network made ready, the VNM
    command, then its interface to the old network down (make before break)."""
    host = net.get(topo.prefix + name)
    prepare_host_move(host, f"{host.name}-eth1")
    got = vnm_op(inst, op="migrate", host=name)
    if got["ok"]:
        finish_host_move(host, f"{host.name}-eth0")
    return got


def hosts(topo: Any, net: Any) -> List[Any]:
    return [net.get(topo.prefix + h) for h in HOSTS]


def port_packets(bridge: str) -> Dict[int, int]:
    """OpenFlow port -> packets received + sent, as Open vSwitch counts them."""
    out = subprocess.run(["ovs-ofctl", "-O", OF15, "dump-ports", bridge], check=True,
                         capture_output=True, text=True).stdout
    counts: Dict[int, int] = {}
    for m in re.finditer(r"port\s+(\d+):\s*rx pkts=(\d+).*?\n\s*tx pkts=(\d+)", out):
        counts[int(m.group(1))] = int(m.group(2)) + int(m.group(3))
    return counts


def tunnel_packets(topo: Any) -> int:
    """Every packet the tunnel switch has seen, on any port."""
    return sum(port_packets(topo.prefix + "t0").values())


# -- whole runs (experiments/vnm.py, the demo) -----------------------------------------------------
BW_MBIT = 24.0                  # the paper's baseline throughput; every link, tunnels included
UDP_RATE = "1M"                 # with 125-byte datagrams: 1,000 a second (the paper's ~25,000/25 s)
UDP_BYTES = 125
PING_INTERVAL_S = 0.01
SLACK_S = 3.0                   # the traffic outlasts the schedule by this: the commands' own time
IPERF_PORT = 5201


def iperf_server(host: Any, port: int = IPERF_PORT) -> Any:
    """A one-test iperf3 server in `host`'s namespace, listening when this returns."""
    proc = host.popen(["iperf3", "-s", "-1", "-J", "-p", str(port)], text=True)
    try:
        poll(lambda: f":{port} " in host.cmd(f"ss -Hltn sport = :{port}")
             or proc.poll() is not None, 10, f"iperf3 listening on {host.name}")
        if proc.poll() is not None:
            raise RuntimeError(f"iperf3 server on {host.name} ended: {proc.communicate()}")
    except BaseException:
        with _stopping(proc):
            raise
    return proc


def iperf_json(proc: Any, timeout: float) -> Dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    try:
        doc = json.loads(out)
    except ValueError:
        raise RuntimeError(f"iperf3 said no JSON: {out[-500:]!r} {err[-500:]!r}") from None
    if doc.get("error"):
        raise RuntimeError(f"iperf3: {doc['error']}")
    return doc


def migration_run(algorithm: Optional[str], traffic: str, phase_s: float = 5.0,
                  bw: float = BW_MBIT, log: Callable[[str], None] = lambda _: None
                  ) -> Dict[str, Any]:
    """One run: traffic h1 -> h2 for 5 phases of at least `phase_s` s each (plus SLACK_S for the
    commands), the migration's commands given on schedule (none for the baseline, None).

    `traffic`: "tcp" (iperf3, per-second throughput) or "udp" (iperf3 UDP, 1,000 datagrams a
    second, and a 10 ms ping beside it for RTTs). Times are seconds since the traffic started.
    """
    if traffic not in ("tcp", "udp"):
        raise ValueError(f"traffic {traffic!r}: tcp or udp")
    total = math.ceil(5 * phase_s + SLACK_S)
    with Bench(functools.partial(start, bw=bw), name="vnm") as b, \
            contextlib.ExitStack() as procs, tempfile.TemporaryFile("w+") as ping_out:
        h1, h2 = hosts(b.topo, b.net)
        reach_all([h1, h2])
        lay = layout(b.topo, b.net)
        actions: Dict[str, Callable[[], Dict[str, Any]]] = {
            "prepare": lambda: vnm_op(b.c1, op="prepare", algorithm=algorithm, layout=lay),
            "migrate h1": lambda: migrate(b.c1, b.topo, b.net, "h1"),
            "migrate h2": lambda: migrate(b.c1, b.topo, b.net, "h2"),
            "finalize": lambda: vnm_op(b.c1, op="finalize")}
        server = procs.enter_context(_stopping(iperf_server(h2)))
        cmd = ["iperf3", "-c", h2.IP(), "-p", str(IPERF_PORT), "-t", str(total), "-i", "1", "-J"]
        if traffic == "udp":
            cmd += ["-u", "-b", UDP_RATE, "-l", str(UDP_BYTES)]
        t0 = time.time()
        client_proc = procs.enter_context(_stopping(h1.popen(cmd, text=True)))
        pinger = None
        if traffic == "udp":
            # to a file (a pipe read only at the end fills and stalls ping), until interrupted
            # at the traffic's end (ping's -w would end at the first error the network reports,
            # such as h1's old interface going down)
            pinger = procs.enter_context(_stopping(h1.popen(
                ["ping", "-D", "-n", "-i", str(PING_INTERVAL_S), "-W", "1", h2.IP()],
                stdout=ping_out, stderr=subprocess.STDOUT, text=True)))
        # iperf3 counts its intervals from its test's start: when h2 sees the connection
        established = f"ss -Htn state established sport = :{IPERF_PORT}"
        poll(lambda: f":{IPERF_PORT} " in h2.cmd(established), 10, "iperf3 connected",
             interval=0.01)
        offset = time.time() - t0
        steps = []
        due = t0 + phase_s
        for name in COMMANDS:
            time.sleep(max(0.0, due - time.time()))  # noqa: the schedule, not a wait
            issued = time.time()
            got = actions[name]() if algorithm else {"ok": True, "ms": 0.0}
            done = time.time()
            if not got.get("ok"):
                raise RuntimeError(f"{name} refused: {got.get('error')}")
            steps.append({"command": name, "issued_s": round(issued - t0, 3),
                          "done_s": round(done - t0, 3), "ms": got.get("ms")})
            log(f"{name}: {(done - issued) * 1000:.0f} ms")
            due = done + phase_s
        if due > t0 + offset + total:
            raise RuntimeError(f"the commands took {due - t0 - 5 * phase_s:.1f} s, more than "
                               f"the {SLACK_S:.0f} s the traffic allows for")
        sent = iperf_json(client_proc, total + 30)
        received = iperf_json(server, 30)
        pings = ""
        if pinger:
            pinger.send_signal(signal.SIGINT)  # ping prints its summary and ends
            pinger.wait(timeout=10)
            ping_out.seek(0)
            pings = ping_out.read()
    run = summarise_run(algorithm, traffic, phase_s, t0, steps, sent, received, pings, offset)
    return {**run, "bw_mbit": bw}


@contextlib.contextmanager
def _stopping(proc: Any) -> Iterator[Any]:
    """The process, killed on the way out if it is still running (Mininet's popen starts it in
    a session of its own: net.stop() would leave it)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
