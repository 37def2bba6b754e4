"""The LIME testbeds on a bench: controller config, hand-checked operation requests, pings and
host moves, shared by the integration tests, `experiments/lime.py` and the demo.

The requests here are built from Mininet's own view of the links (`port_of`), which is what a
test should check a planner against; `sdnmig lime` plans the same requests from Open vSwitch.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import redis

from lime_shim import client
from sdnmig.lab import (Controllers, build_net, disable_ipv6, finish_host_move, ping, poll,
                        prepare_host_move, rx_packets, unique_prefix, wait_roles)
from topologies.testbeds import LimeEnsembleTopo, LimeTopo, spare_dpid

OF15 = "OpenFlow13,OpenFlow14,OpenFlow15"
SHIM_COOKIE = "0x11ae"
ENSEMBLE = (1, 2, 3)
PING_INTERVAL_S = 0.001
LOSS_PINGS = 2000        # 2 s of pings: the migration starts after LEAD_PINGS of them
LEAD_PINGS = 300


def lime_op(inst: Any, timeout: float = 15.0, **req: Any) -> Dict[str, Any]:
    """One operation on the instance's shim, and its answer."""
    r = redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password)
    try:
        return client.request(r, req, timeout)
    finally:
        r.close()


def port_of(net: Any, sw: str, peer: str) -> int:
    """The number of `sw`'s port on its link to `peer`."""
    node, other = net.get(sw), net.get(peer)
    for link in net.linksBetween(node, other):
        intf = link.intf1 if link.intf1.node is node else link.intf2
        return node.ports[intf]
    raise AssertionError(f"no link {sw}-{peer}")


def flows(bridge: str) -> List[str]:
    """Every rule on a bridge, as ovs-ofctl prints it."""
    out = subprocess.run(["ovs-ofctl", "-O", OF15, "dump-flows", bridge], check=True,
                         capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if "n_packets=" in ln]


def shim_flows(bridge: str) -> List[str]:
    return [ln for ln in flows(bridge) if f"cookie={SHIM_COOKIE}" in ln]


# -- the testbeds -----------------------------------------------------------------------------------
def start(controllers: Any, make_net: Callable[..., Any], ensemble: bool = False,
          apps: tuple = ("lime", "learning"), platform: str = "os_ken", **conf: str) -> Any:
    """(topo, controller instance, started net) for LimeTopo or LimeEnsembleTopo, every switch
    ours, the spares and the links to them kept from the apps."""
    topo = (LimeEnsembleTopo if ensemble else LimeTopo)(prefix=unique_prefix())
    p = topo.prefix
    if ensemble:
        spares = [spare_dpid(i) for i in ENSEMBLE]
        reserved = [f"{i}:{topo.port(f'{p}s{i}', f'{p}s{i}p')[0]}" for i in ENSEMBLE]
    else:
        spares = [spare_dpid(3)]
        reserved = [f"{n}:{topo.port(f'{p}s{n}', f'{p}s3p')[0]}" for n in (1, 2)]
    c1, net = start_on(controllers, make_net, topo, apps, platform, {
        "events": "lime", "lime_spares": ",".join(hex(d) for d in spares),
        "lime_reserved": ",".join(reserved), **conf})
    return topo, c1, net


def start_on(controllers: Any, make_net: Callable[..., Any], topo: Any, apps: tuple,
             platform: str, conf: Dict[str, str], **net_opts: Any) -> Tuple[Any, Any]:
    """One controller instance with this config, and the topology's network with every bridge
    (OpenFlow 1.3-1.5) ours."""
    (c1,) = controllers.start(1, apps=apps, platform=platform, extra_conf=conf)
    net = make_net(topo, [c1], protocols=OF15, **net_opts)
    disable_ipv6(net)
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    return c1, net


def s3_request(topo: Any, net: Any) -> Dict[str, Any]:
    """LimeTopo: s3 onto s3p, whose links reach s1 and s2 directly (the neighbours move)."""
    p = topo.prefix
    s1, s2, s3, s3p = (p + n for n in ("s1", "s2", "s3", "s3p"))
    return {"switch": 3, "onto": spare_dpid(3),
            "ports": {port_of(net, s3, s1): port_of(net, s3p, s1),
                      port_of(net, s3, s2): port_of(net, s3p, s2)},
            "neighbours": [[1, port_of(net, s1, s3), port_of(net, s1, s3p)],
                           [2, port_of(net, s2, s3), port_of(net, s2, s3p)]]}


def ensemble_steps(topo: Any, net: Any) -> List[Dict[str, Any]]:
    """LimeEnsembleTopo: each switch onto its spare. Links between the switches map to the spares'
    links; host ports are tunnelled over each switch's link to its spare until the host moves."""
    p = topo.prefix
    steps = []
    for i in ENSEMBLE:
        s, sp = f"{p}s{i}", f"{p}s{i}p"
        ports = {port_of(net, s, f"{p}s{j}"): port_of(net, sp, f"{p}s{j}p")
                 for j in ENSEMBLE if abs(i - j) == 1}
        tunnels = {port_of(net, s, p + h): [port_of(net, sp, s), port_of(net, s, sp)]
                   for h, at in LimeEnsembleTopo.HOSTS.items() if at == i}
        steps.append({"switch": i, "onto": spare_dpid(i), "ports": ports, "tunnels": tunnels})
    return steps


def ensemble_hosts(topo: Any, net: Any) -> List[Any]:
    return [net.get(topo.prefix + h) for h in LimeEnsembleTopo.HOSTS]


def move_host(inst: Any, topo: Any, net: Any, host: Any) -> Dict[str, Any]:
    """A VM migration's stand-in on LimeEnsembleTopo: the host's second interface made ready, its
    port moved to the spare by the shim, then the first interface down (make before break)."""
    p = topo.prefix
    i = LimeEnsembleTopo.HOSTS[host.name[len(p):]]
    prepare_host_move(host, f"{host.name}-eth1")
    started = time.monotonic()
    got = lime_op(inst, op="move_host", switch=i, port=port_of(net, f"{p}s{i}", host.name),
                  onto=spare_dpid(i), onto_port=port_of(net, f"{p}s{i}p", host.name))
    if got["ok"]:
        finish_host_move(host, f"{host.name}-eth0")
    got["wall_ms"] = round((time.monotonic() - started) * 1000, 1)
    return got


def reach_all(hosts: List[Any], timeout: float = 15.0) -> None:
    for a in hosts:
        for b in hosts:
            if a is not b:
                poll(lambda: ping(a, b, count=1, interval=0.2)["received"] == 1 or None, timeout,
                     f"{a.name} reaching {b.name} through the shim")


# -- pings ------------------------------------------------------------------------------------------
def ping_bg(src: Any, dst: Any, count: int, interval: float = 0.001) -> Any:
    """A ping running in `src`'s namespace (not its shell, which stays free), 64-byte packets."""
    proc = src.popen(["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1",
                      "-s", "56", dst.IP()], text=True)
    return proc


def ping_result(proc: Any, timeout: float = 120.0) -> Dict[str, int]:
    out, _ = proc.communicate(timeout=timeout)
    m = re.search(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?", out)
    if not m:
        raise RuntimeError(f"could not read ping output: {out!r}")
    sent, received = int(m.group(1)), int(m.group(2))
    return {"sent": sent, "lost": sent - received, "dup": int(m.group(3) or 0)}


def rx(host: Any) -> int:
    """Packets the host received on any of its interfaces (a moved host uses its second one)."""
    out = host.cmd("cat /sys/class/net/*-eth*/statistics/rx_packets")
    return sum(int(x) for x in out.split())


def running(procs: List[Any], counters: Callable[[], int], at_least: int, what: str) -> None:
    """Wait until the pings are flowing (`counters()` reached `at_least`)."""
    poll(lambda: counters() >= at_least or None, 10, what)
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"a ping ended early: {p.communicate()}")


# -- whole runs (experiments/lime.py, the demo) -----------------------------------------------------
class Bench:
    """A fresh controller and Mininet network per run, torn down whatever happens. `starter`
    is a testbed's start (this module's, vnm_lab's) with the testbed's options bound."""

    def __init__(self, starter: Callable[..., Any], name: str = "lime") -> None:
        self.starter = starter
        self.name = name

    def __enter__(self) -> "Bench":
        self.dir = Path(tempfile.mkdtemp(prefix=f"sdnmig-{self.name}-"))
        self.ctl = Controllers(self.dir)
        self.nets: List[Any] = []

        def make(topo: Any, insts: Any, **opts: Any) -> Any:
            net = build_net(topo, insts, **opts)
            self.nets.append(net)
            return net
        try:
            self.topo, self.c1, self.net = self.starter(self.ctl, make)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        for net in self.nets:
            net.stop()
        problems = self.ctl.close()
        if problems or exc[0] is not None:
            print(f"{self.name}: controller logs kept in {self.dir}", file=sys.stderr)
            if exc[0] is None:
                raise RuntimeError(f"controller logged an exception: {problems[0]}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def op(self, **req: Any) -> Dict[str, Any]:
        got = lime_op(self.c1, **req)
        if not got.get("ok"):
            raise RuntimeError(f"{req.get('op')} refused: {got.get('error')}")
        return got


# -- (a) ---------------------------------------------------------------------------------------------
def loss_run(method: str) -> Dict[str, Any]:
    with Bench(start) as b:
        h1, h2 = (b.net.get(h) for h in b.topo.hosts())
        reach_all([h1, h2])
        req = s3_request(b.topo, b.net)
        rx0 = rx_packets(h2)
        proc = ping_bg(h1, h2, LOSS_PINGS, PING_INTERVAL_S)
        running([proc], lambda: rx_packets(h2) - rx0, LEAD_PINGS,
                "pings flowing before the migration")
        t0 = time.monotonic()
        if method == "lime":
            steps = [b.op(op="clone", **req), b.op(op="retire", switch=3, instance=3)]
        else:
            steps = [b.op(op="freeze", **req)]
        wall = (time.monotonic() - t0) * 1000
        res = ping_result(proc)
        if res["sent"] - LEAD_PINGS < wall / 1000 / PING_INTERVAL_S * 0.5:
            raise RuntimeError(f"the pings ended before the migration did: {res}, {wall:.0f} ms")
        return {"method": method, **res, "op_ms": sum(s["ms"] for s in steps),
                "steps_ms": [s["ms"] for s in steps], "wall_ms": round(wall, 1)}


# -- (c) ---------------------------------------------------------------------------------------------
def ensemble_run() -> Dict[str, Any]:
    with Bench(functools.partial(start, ensemble=True)) as b:
        hosts = ensemble_hosts(b.topo, b.net)
        h1, h2, h3, h4 = hosts
        reach_all(hosts)
        out: Dict[str, Any] = {}

        def under_pings(what: str, action: Any) -> Dict[str, Any]:
            before = rx(h4) + rx(h3)
            procs = [ping_bg(h1, h4, 1500, PING_INTERVAL_S),
                     ping_bg(h2, h3, 1500, PING_INTERVAL_S)]
            running(procs, lambda: rx(h4) + rx(h3) - before,
                             2 * LEAD_PINGS, f"pings flowing before the {what}")
            got = action()
            res = [ping_result(p) for p in procs]
            return {"ms": got["ms"], "lost": sum(r["lost"] for r in res),
                    "dup": sum(r["dup"] for r in res), "sent": sum(r["sent"] for r in res)}

        out["clone"] = under_pings("clone", lambda: b.op(
            op="ensemble", steps=ensemble_steps(b.topo, b.net)))
        moves = []
        for host, peer in ((h1, h2), (h2, h3), (h3, h4), (h4, h1)):
            proc = ping_bg(peer, host, 1000, PING_INTERVAL_S)
            before = rx(host)
            running([proc], lambda: rx(host) - before, LEAD_PINGS,
                             "pings flowing before the host move")
            got = move_host(b.c1, b.topo, b.net, host)
            if not got["ok"]:
                raise RuntimeError(f"move of {host.name} refused: {got['error']}")
            moves.append({"host": host.name[len(b.topo.prefix):], "ms": got["ms"],
                          "wall_ms": got["wall_ms"], **ping_result(proc)})
        out["moves"] = moves
        out["retire"] = under_pings("retire", lambda: b.op(
            op="retire_ensemble", steps=[{"switch": i, "instance": i} for i in ENSEMBLE]))
        out["duration_ms"] = round(out["clone"]["ms"] + sum(m["wall_ms"] for m in moves)
                                   + out["retire"]["ms"], 1)
        return out
