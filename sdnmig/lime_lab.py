"""The LIME testbeds on a bench: controller config, hand-checked operation requests, pings and
host moves, shared by the integration tests, `experiments/lime.py` and the demo.

The requests here are built from Mininet's own view of the links (`port_of`), which is what a
test should check a planner against; `sdnmig lime` plans the same requests from Open vSwitch.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from typing import Any, Callable, Dict, List

import redis

from lime_shim.app import OPS_CHANNEL
from sdnmig.lab import (disable_ipv6, finish_host_move, ping, poll, prepare_host_move,
                        unique_prefix, wait_roles)
from topologies.testbeds import LimeEnsembleTopo, LimeTopo, spare_dpid

OF15 = "OpenFlow13,OpenFlow14,OpenFlow15"
SHIM_COOKIE = "0x11ae"
ENSEMBLE = (1, 2, 3)


def lime_op(inst: Any, timeout: float = 15.0, **req: Any) -> Dict[str, Any]:
    """One operation on the instance's shim, and its answer."""
    r = redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password)
    reply = f"lime:reply:{uuid.uuid4().hex}"
    ps = r.pubsub(ignore_subscribe_messages=True)
    try:
        ps.subscribe(reply)
        ps.get_message(timeout=1.0)
        if r.publish(OPS_CHANNEL, json.dumps({**req, "reply": reply})) != 1:
            raise RuntimeError("the shim is not listening on " + OPS_CHANNEL)
        msg = poll(lambda: ps.get_message(timeout=0.2), timeout, f"the shim's answer to {req}")
        return json.loads(msg["data"])
    finally:
        ps.close()
        r.close()


def port_of(net: Any, sw: str, peer: str) -> int:
    """The number of `sw`'s port on its link to `peer`."""
    node, other = net.get(sw), net.get(peer)
    for link in net.linksBetween(node, other):
        intf = link.intf1 if link.intf1.node is node else link.intf2
        return node.ports[intf]
    raise AssertionError(f"no link {sw}-{peer}")


def shim_flows(bridge: str) -> List[str]:
    out = subprocess.run(["ovs-ofctl", "-O", OF15, "dump-flows", bridge], check=True,
                         capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if f"cookie={SHIM_COOKIE}" in ln]


# -- the testbeds -----------------------------------------------------------------------------------
def start(controllers: Any, make_net: Callable[..., Any], ensemble: bool = False,
          apps: tuple = ("lime", "learning"), **conf: str) -> Any:
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
    (c1,) = controllers.start(1, apps=apps, extra_conf={
        "events": "lime", "lime_spares": ",".join(hex(d) for d in spares),
        "lime_reserved": ",".join(reserved), **conf})
    net = make_net(topo, [c1], protocols=OF15)
    disable_ipv6(net)
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    return topo, c1, net


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


def running(procs: List[Any], counters: Callable[[], int], at_least: int, what: str) -> None:
    """Wait until the pings are flowing (`counters()` reached `at_least`)."""
    poll(lambda: counters() >= at_least or None, 10, what)
    for p in procs:
        if p.poll() is not None:
            raise RuntimeError(f"a ping ended early: {p.communicate()}")
