"""The distributed hypervisor on a Mininet network, set up the way an operator would, through
the management entity: slices and tenant controllers configured, the proxy and two instances
started, each switch added with its passive port and assigned to hv1. Shared by the
integration tests and the demo; `teardown()` stops what it started and returns the log lines
that show an exception."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from hypervisor.manage import Manager
from sdnmig.instances import free_ports
from sdnmig.lab import poll
from topologies.testbeds import SlicedTopo


class Deployment:
    def __init__(self, net: Any, manager: Manager, topo: SlicedTopo,
                 ports: Dict[str, int]) -> None:
        self.net, self.m, self.topo, self.ports = net, manager, topo, ports

    def host(self, name: str) -> Any:
        return self.net.get(self.topo.prefix + name)

    def bridge(self, name: str = "s1") -> str:
        return self.topo.prefix + name

    def ping(self, a: str, b: str, count: int = 3) -> int:
        """How many of `count` pings got an answer."""
        out = self.host(a).cmd(f"ping -n -c {count} -i 0.2 -W 1 {self.host(b).IP()}")
        for line in out.splitlines():
            if "received" in line:
                return int(line.split(",")[1].split()[0])
        return 0

    def proxy(self) -> Dict[str, Any]:
        return self.m.status()["proxy"].get("status") or {}

    def served_by(self) -> Dict[Tuple[str, str], Any]:
        return {(t["switch"], t["tenant"]): t["served_by"]
                for t in self.proxy().get("tenancies", [])}

    def routes(self) -> List[str]:
        return [t["route"] for t in self.proxy().get("tenancies", [])]

    def teardown(self) -> List[str]:
        problems = []
        for name in ("hv1", "hv2"):
            try:
                self.m.stop(name)
            except Exception as exc:  # noqa: BLE001  every part is stopped
                problems.append(f"stop {name}: {exc}")
        try:
            self.m.proxy_stop()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"proxy stop: {exc}")
        for log in sorted(self.m.root.glob("*.log")):
            text = log.read_text(errors="replace")
            problems += [f"{log.name}: {ln}" for ln in text.splitlines()
                         if "Traceback" in ln or "task failed" in ln]
        return problems


def deploy(net: Any, topo: SlicedTopo, state_dir: Path, controllers: Dict[str, str],
           wait_tenants: Optional[int] = None) -> Deployment:
    """`controllers`: tenant -> "host:port" of its controller; `wait_tenants`: how many tenant
    connections to wait for (default: every tenant on every switch)."""
    m = Manager(state_dir)
    switches = topo.switches()
    base = 21000 + os.getpid() % 15000
    names = ["proxy", "hv1", "hv2"] + [f"passive{i}" for i in range(len(switches))]
    ports = dict(zip(names, free_ports(len(names), base)))
    m.configure(topo.slices(), controllers)
    d = Deployment(net, m, topo, ports)
    try:
        m.proxy_start(f"127.0.0.1:{ports['proxy']}")
        for i, sw in enumerate(switches):
            m.switch_add(sw, ports[f"passive{i}"])
        m.start("hv1", ports["hv1"])
        m.start("hv2", ports["hv2"])
        for sw in switches:
            m.assign(sw, "hv1")
        want = len(controllers) * len(switches) if wait_tenants is None else wait_tenants
        poll(lambda: len([t for t in d.proxy().get("tenancies", [])
                          if t["tenant_connected"]]) >= want, 20,
             f"{want} tenant connection(s) through the proxy")
    except BaseException:
        d.teardown()
        raise
    return d
