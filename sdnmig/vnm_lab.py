"""The VNM testbed (topologies.testbeds.VnmTopo) on a bench: controller config, the layout of the
two networks as Mininet wired them, commands, host moves and tunnel counters. Shared by the
integration tests (and the experiment and demo to come).

The layout is read from Mininet's own view of the links (`port_of`), which is what a test should
check the planner (`sdnmig vnm prepare`, from Open vSwitch's view) against.
(experiments/vnm.py and the demo's VNM step are still to come: issue 5's remaining part.)
"""
from __future__ import annotations

import re
import subprocess
from typing import Any, Callable, Dict, List, Tuple

import redis

from lime_shim import client
from ryu_apps.vnm.core import OPS_CHANNEL
from sdnmig.lab import finish_host_move, prepare_host_move, unique_prefix
from sdnmig.lime_lab import OF15, port_of, start_on
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
    c1, net = start_on(controllers, make_net, topo, apps, platform, extra)
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
