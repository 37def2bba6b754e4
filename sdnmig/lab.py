"""A lab bench around real OVS, Mininet, Redis and controller processes (tests, demo, experiments).

Every helper polls with a deadline instead of sleeping, names what it builds uniquely (a 4-letter
prefix per network) and undoes only what it made: `net.stop()` for its own network, PIDs for its
own controllers and Redis servers. It never runs `mn -c` or any broad kill.
"""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from mininet.link import Link
from mininet.net import Mininet
from mininet.node import RemoteController

from sdnmig import instances, ovs
from sdnmig.instances import Instance
from topologies.nodes import SdnHost, ShapedLink, switch_class

_counter = itertools.count()
BAD_LOG = re.compile(r"Traceback|SDNMIG-HANDLER-EXCEPTION|Exception occurred during handler")


def unique_prefix() -> str:
    """4 characters, unique per process and call: 'z' + 3 base-36 digits (node names stay short)."""
    n = (os.getpid() * 37 + next(_counter)) % 36 ** 3
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "z" + digits[n // 1296] + digits[n // 36 % 36] + digits[n % 36]


def poll(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Return pred()'s first truthy value, or fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def log_problems(inst: Instance) -> List[str]:
    """Lines of the controller's and the advertiser's logs that show a swallowed exception."""
    problems = []
    for log in (inst.controller_log, inst.path / "advertiser.log"):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        problems += [ln for ln in text.splitlines() if BAD_LOG.search(ln)]
    return problems


class Controllers:
    """Controller instances started by one user (a test, the demo), sharing one bus; `close()`
    stops them all, then the bus, and returns the log lines that show a swallowed exception."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.started: List[Instance] = []
        self.bus: Optional[instances.Bus] = None

    def start(self, count: int = 1, apps: Sequence[str] = ("learning",), *,
              master: str = "first", platform: str = "os_ken", ids: Optional[List[str]] = None,
              hosts: Optional[List[str]] = None, netns_pids: Optional[List[int]] = None,
              extra_conf: Optional[Dict[str, str]] = None, bus_host: str = "127.0.0.1",
              discovery: bool = True) -> List[Instance]:
        """Start `count` instances. The first call starts the bus on `bus_host`: an address the
        instances reach (namespaced ones: the root namespace's, e.g. MetaTopo's 10.254.0.254)."""
        taken = [p for i in self.started for p in (i.of_port, i.redis_port)]
        taken += [self.bus.port] if self.bus else []
        insts = instances.plan(count, list(apps), self.state_dir, of_port=20000 + os.getpid() % 20000,
                               redis_port=40000 + os.getpid() % 20000, master=master,
                               platform=platform, ids=ids, hosts=hosts, netns_pids=netns_pids,
                               taken=taken)
        for inst in insts:
            inst.extra_conf.update(extra_conf or {})
            inst.discovery = discovery
        if self.bus is None:
            self.bus = instances.ensure_bus(
                self.state_dir, host=bus_host,
                port_start=instances.BUS_PORT_START + os.getpid() % 5000,
                taken=taken + [p for i in insts for p in (i.of_port, i.redis_port)])
        instances.start_all(insts, bus=self.bus)
        self.started += insts
        return insts

    def close(self) -> List[str]:
        """Stop everything started; return log lines showing a swallowed exception."""
        problems = []
        for inst in reversed(self.started):
            instances.stop_instance(inst)
            problems += [f"{inst.id}: {ln}" for ln in log_problems(inst)]
        if self.bus:
            instances.stop_bus(self.state_dir)
        return problems

    def dump_logs(self, lines: int = 40) -> str:
        out = []
        for inst in self.started:
            try:
                tail = inst.controller_log.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                tail = ["(no log)"]
            out.append(f"--- {inst.id} ({inst.controller_log}) ---\n" + "\n".join(tail))
        return "\n".join(out)


class StartedController(RemoteController):
    """A controller instance that `sdnmig.instances` already started and saw listening.

    Mininet's RemoteController probes the port with telnet and decodes the reply as UTF-8, which
    intermittently raises on OpenFlow's binary HELLO (and needs telnet installed): skip it.
    """

    def checkListening(self) -> None:
        return None


def build_net(topo: Any, controllers: Iterable[Instance],
              before_start: Optional[Callable[[Mininet], Any]] = None, shaped: bool = False,
              **switch_opts: Any) -> Mininet:
    """A started Mininet network whose switches connect to the given instances (in order).

    `before_start(net)` runs after the nodes exist and before switches reach a controller (to take
    links down, or start controllers inside host namespaces); it may return more instances.
    `shaped`: a topology's `bw` link option takes effect (topologies.nodes.ShapedLink).
    """
    net = Mininet(topo=topo, switch=switch_class(**switch_opts), host=SdnHost, controller=None,
                  link=ShapedLink if shaped else Link, autoSetMacs=False, build=False,
                  waitConnected=False)
    try:
        net.build()
        controllers = list(controllers) + list((before_start(net) if before_start else None) or [])
        for n, inst in enumerate(controllers):
            # not `c<n>`: MetaTopo's controller hosts are c1..cN, and a node of the same name
            # would take the host's place in net.get()
            net.addController(f"{topo.prefix}ctl{n}", controller=StartedController, ip=inst.host,
                              port=inst.of_port)
        net.start()
    except BaseException:
        net.stop()  # the caller never gets the net: undo its bridges, links and namespaces here
        raise
    return net


def controller_roles(inst: Instance) -> Dict[int, str]:
    """dpid -> role name, as the instance's role manager has it confirmed by the switch."""
    import redis

    from ryu_apps.kvs import ROLES_KEY

    r = redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password,
                    socket_timeout=2)
    try:
        raw = r.hgetall(ROLES_KEY)
    except redis.RedisError:
        return {}
    return {int(k, 16): v.decode().split()[0] for k, v in raw.items()}


def wait_roles(net: Mininet, insts: Sequence[Instance], master: Dict[str, str],
               timeout: float = 30.0) -> None:
    """Wait until each instance has its expected role confirmed on every bridge named in `master`.

    `master` maps bridge name -> id of the instance that should be MASTER; all others SLAVE.
    (The controllers' confirmed view: OVS's own Controller table lags by up to ~5 s.)
    """
    dpids = {br: int(net.get(br).dpid, 16) for br in master}

    def settled() -> bool:
        for inst in insts:
            have = controller_roles(inst)
            for br, dpid in dpids.items():
                if have.get(dpid) != ("MASTER" if master[br] == inst.id else "SLAVE"):
                    return False
        return True

    poll(settled, timeout, f"roles on {', '.join(master)}", interval=0.05)


def wait_ovs_roles(insts: Sequence[Instance], master: Dict[str, str], timeout: float = 15.0) -> None:
    """Wait until Open vSwitch itself reports the expected roles (its view refreshes slowly)."""

    def settled() -> bool:
        links = ovs.controller_links()
        for br in master:
            by_target = {l.target: l for l in links.get(br, [])}
            for inst in insts:
                link = by_target.get(inst.target)
                want = "master" if master[br] == inst.id else "slave"
                if link is None or not link.connected or link.role != want:
                    return False
        return True

    poll(settled, timeout, f"OVS to report roles on {', '.join(master)}", interval=0.2)


def roles_now(bridges: Iterable[str]) -> Dict[str, Dict[str, str]]:
    links = ovs.controller_links()
    return {br: {l.target: l.role for l in links.get(br, [])} for br in bridges}


def dump_flows(net: Mininet) -> str:
    out = []
    for sw in net.switches:
        res = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13,OpenFlow14,OpenFlow15", "dump-flows",
                              sw.name],
                             capture_output=True, text=True)
        out.append(f"--- {sw.name} ---\n{res.stdout}{res.stderr}")
    return "\n".join(out)


def disable_ipv6(net: Mininet) -> None:
    """Quiet hosts: no router solicitations or MLD reports to muddy packet counts."""
    for h in net.hosts:
        h.cmd("sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1")


def rx_packets(host: Any) -> int:
    return int(host.cmd(f"cat /sys/class/net/{host.defaultIntf().name}/statistics/rx_packets"))


def ping(src: Any, dst: Any, count: int = 3, interval: float = 0.2, wait: int = 1) -> Dict[str, int]:
    """Run ping in src's namespace; return sent, received and duplicate counts."""
    out = src.cmd(f"ping -n -c {count} -i {interval} -W {wait} {dst.IP()}")
    m = re.search(r"(\d+) packets transmitted, (\d+) received(?:, \+(\d+) duplicates)?", out)
    if not m:
        raise AssertionError(f"could not read ping output: {out!r}")
    return {"sent": int(m.group(1)), "received": int(m.group(2)),
            "duplicates": int(m.group(3) or 0)}


def prepare_host_move(host: Any, new: str) -> None:
    """Make-before-break for a host moving to its interface `new` (a VM migration's stand-in):
    `new` takes the host's MAC and IP (its route less preferred until the old interface goes),
    and the neighbours the host knows, so nothing waits on ARP once it is the host's link."""
    old = host.defaultIntf()
    ip, plen, mac = old.IP(), old.prefixLen, old.MAC()
    neigh = host.cmd(f"ip neigh show dev {old.name}")
    cmds = [f"sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{new}.rp_filter=0",
            f"ip link set {new} address {mac}", f"ip link set {new} up",
            f"ip addr add {ip}/{plen} dev {new} metric 100"]
    for line in neigh.splitlines():
        m = re.match(r"(\S+) lladdr (\S+)", line)
        if m:
            cmds.append(f"ip neigh replace {m.group(1)} lladdr {m.group(2)} dev {new} nud reachable")
    for c in cmds:
        out = host.cmd(c + " && echo ok")
        if "ok" not in out.split():
            raise RuntimeError(f"{host.name}: {c!r} failed: {out.strip()}")


def finish_host_move(host: Any, old: str) -> None:
    """The break: the old interface goes down, so the host sends on the new one."""
    out = host.cmd(f"ip link set {old} down && echo ok")
    if "ok" not in out.split():
        raise RuntimeError(f"{host.name}: {old} did not go down: {out.strip()}")
