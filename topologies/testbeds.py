"""Mininet topologies for the suite and for each paper's testbed: plain graphs, no test logic.

Every topology takes `prefix` (prepended to every node name, so tests and a user's own Mininet
never share a bridge or interface name; keep it to 4 characters, Linux names stop at 15) and gives
each switch an explicit datapath id and each host a fixed MAC and IP, so results are comparable
across runs. Node classes come from `topologies.nodes`.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from mininet.node import OVSSwitch
from mininet.topo import Topo


class SdnTopo(Topo):
    """Helpers shared by the testbeds: prefixed names, explicit dpids, numbered hosts."""

    def build(self, prefix: str = "", **_: Any) -> None:  # overridden
        raise NotImplementedError

    def _init(self, prefix: str) -> None:
        if len(prefix) > 4 or not (prefix == "" or prefix.isalnum()):
            raise ValueError(f"prefix {prefix!r}: use at most 4 letters or digits")
        self.prefix = prefix
        self._hosts = 0

    def switch(self, name: str, dpid: int, **params: Any) -> str:
        return self.addSwitch(self.prefix + name, dpid=f"{dpid:016x}", **params)

    def host(self, name: str, **params: Any) -> str:
        self._hosts += 1
        n = self._hosts
        params.setdefault("ip", f"10.0.{n // 250}.{n % 250 + 1}/16")
        params.setdefault("mac", f"00:00:00:00:{n // 256:02x}:{n % 256:02x}")
        return self.addHost(self.prefix + name, **params)


class LinearTopo(SdnTopo):
    """k switches in a chain, n hosts on each: s1-s2-...-sk, host h<switch>x<i> (or h<switch>)."""

    def build(self, k: int = 4, n: int = 1, prefix: str = "") -> None:
        self._init(prefix)
        if k < 1 or n < 0:
            raise ValueError("linear needs k >= 1 switches and n >= 0 hosts each")
        last = None
        for i in range(1, k + 1):
            sw = self.switch(f"s{i}", i)
            for j in range(1, n + 1):
                self.addLink(self.host(f"h{i}" if n == 1 else f"h{i}x{j}"), sw)
            if last:
                self.addLink(last, sw)
            last = sw


class SlicedTopo(SdnTopo):
    """The hypervisor's testbed: two tenants' hosts on shared switches.

    One switch: s1 with h1, h2 (ports 1, 2: tenant t1's) and h3, h4 (ports 3, 4: t2's).
    Two switches: s1 and s2 joined by a trunk on port 3 of each, which both tenants share (each
    with a VLAN of its own); t1 has h1 (s1 port 1) and h2 (s2 port 1), t2 h3 (s1 port 2) and
    h4 (s2 port 2). `slices(topo)` gives the matching slice configuration.
    """

    def build(self, switches: int = 1, prefix: str = "") -> None:
        self._init(prefix)
        if switches not in (1, 2):
            raise ValueError("sliced: 1 or 2 switches")
        self.switch_count = switches
        s1 = self.switch("s1", 0x51)
        if switches == 1:
            for i in range(1, 5):
                self.addLink(self.host(f"h{i}"), s1, port2=i)
            return
        s2 = self.switch("s2", 0x52)
        self.addLink(self.host("h1"), s1, port2=1)
        self.addLink(self.host("h2"), s2, port2=1)
        self.addLink(self.host("h3"), s1, port2=2)
        self.addLink(self.host("h4"), s2, port2=2)
        self.addLink(s1, s2, port1=3, port2=3)

    def slices(self) -> List[Dict[str, Any]]:
        if self.switch_count == 1:
            return [{"tenant": "t1", "ports": {"0x51": [1, 2]}},
                    {"tenant": "t2", "ports": {"0x51": [3, 4]}}]
        trunks = {"0x51": [3], "0x52": [3]}
        return [{"tenant": "t1", "ports": {"0x51": [1], "0x52": [1]}, "vlan": 10,
                 "trunks": trunks},
                {"tenant": "t2", "ports": {"0x51": [2], "0x52": [2]}, "vlan": 20,
                 "trunks": trunks}]


class TreeTopo(SdnTopo):
    """A complete tree of switches with the given depth and fanout; hosts hang off the leaves."""

    def build(self, depth: int = 2, fanout: int = 2, prefix: str = "") -> None:
        self._init(prefix)
        if depth < 1 or fanout < 1:
            raise ValueError("tree needs depth >= 1 and fanout >= 1")
        self._switches = 0
        self._grow(depth, fanout)

    def _grow(self, depth: int, fanout: int) -> str:
        self._switches += 1
        sw = self.switch(f"s{self._switches}", self._switches)
        for _ in range(fanout):
            if depth == 1:
                child = self.host(f"h{self._hosts + 1}")
            else:
                child = self._grow(depth - 1, fanout)
            self.addLink(sw, child)
        return sw


#: dpid of the spare copy of switch with dpid d in the LIME testbeds
def spare_dpid(dpid: int) -> int:
    return 0x100 + dpid


class LimeTopo(SdnTopo):
    """LIME (HotNets'12) Fig. 3: h1-s1-s3-s2-h2, plus the spare s3p ("s3'") linked to s1 and s2.

    s3 is cloned onto s3p: both carry traffic while hosts' paths move, then s3 is retired.
    """

    def build(self, prefix: str = "") -> None:
        self._init(prefix)
        s1, s2, s3 = self.switch("s1", 1), self.switch("s2", 2), self.switch("s3", 3)
        s3p = self.switch("s3p", spare_dpid(3))
        self.addLink(self.host("h1"), s1)
        self.addLink(self.host("h2"), s2)
        self.addLink(s1, s3)
        self.addLink(s3, s2)
        self.addLink(s1, s3p)
        self.addLink(s3p, s2)


class LimeEnsembleTopo(SdnTopo):
    """An ensemble to move as one: s1-s2-s3 with h1, h2 on s1... (see below), and spare copies.

    Hosts: h1 on s1, h2 on s2, h3 and h4 on s3. The spares s1p-s2p-s3p are wired like the
    originals; each host has a second link to the spare of its switch (no IP on it: it becomes the
    host's link when the host moves, make-before-break). `migration_links` adds a link from every
    switch to its spare, for the tunnel rules that reach neighbours still in the old place.
    """

    HOSTS = {"h1": 1, "h2": 2, "h3": 3, "h4": 3}

    def build(self, prefix: str = "", migration_links: bool = True) -> None:
        self._init(prefix)
        old = {i: self.switch(f"s{i}", i) for i in (1, 2, 3)}
        new = {i: self.switch(f"s{i}p", spare_dpid(i)) for i in (1, 2, 3)}
        for net in (old, new):
            self.addLink(net[1], net[2])
            self.addLink(net[2], net[3])
        for name, i in self.HOSTS.items():
            h = self.host(name)
            self.addLink(h, old[i])
            self.addLink(h, new[i], params1={"ip": None})
        if migration_links:
            for i in (1, 2, 3):
                self.addLink(old[i], new[i])


class VnmTopo(SdnTopo):
    """VNM (Tunnel ASAP/ALAP) Fig. 5: old network o1..o4, new network n1..n4, tunnel switch t0.

    In each network h1's switch (1) and h2's switch (4) are joined by an upper path through 2 and a
    lower path through 3. Every switch of both networks has a link to t0 (VLAN-tagged tunnels).
    Hosts attach to the old network; a second link to the counterpart in the new network (no IP
    on it) is the one they move to.
    """

    def build(self, prefix: str = "", bw: float = 0) -> None:
        self._init(prefix)
        link = {"bw": bw} if bw else {}
        nets: Dict[str, Dict[int, str]] = {}
        for tag, base in (("o", 0x10), ("n", 0x20)):
            sw = nets[tag] = {i: self.switch(f"{tag}{i}", base + i) for i in (1, 2, 3, 4)}
            for a, b in ((1, 2), (2, 4), (1, 3), (3, 4)):
                self.addLink(sw[a], sw[b], **link)
        t0 = self.switch("t0", 0x30)
        for tag in ("o", "n"):
            for i in (1, 2, 3, 4):
                self.addLink(nets[tag][i], t0, **link)
        for name, i in (("h1", 1), ("h2", 4)):
            h = self.host(name)
            self.addLink(h, nets["o"][i], **link)
            self.addLink(h, nets["n"][i], params1={"ip": None}, **link)


class MgmtSwitch(OVSSwitch):
    """The management network's plain L2 switch: no controller, standalone, userspace datapath."""

    def __init__(self, name: str, **params: Any) -> None:
        params.update(failMode="standalone", datapath="user")
        super().__init__(name, **params)

    def start(self, controllers: Any) -> None:
        super().start([])


MGMT_NET = "10.254.0"


class MetaTopo(SdnTopo):
    """Meta-Migration testbed: a chain of `switches` switches (one host each) and N controllers.

    With `namespaces=False` controllers run on loopback (the default: nothing here for them).
    With `namespaces=True` each controller gets a namespace c1..cN on a management switch m0, at
    10.254.0.<i>, and the root namespace joins that network as 10.254.0.254 (node `mgmt`) so
    Open vSwitch reaches them: the paper's "several machines" as real addresses.
    """

    def build(self, switches: int = 4, controllers: int = 3, namespaces: bool = False,
              prefix: str = "") -> None:
        self._init(prefix)
        if switches < 1 or controllers < 1:
            raise ValueError("meta needs at least one switch and one controller")
        self.controller_count = controllers
        self.namespaces = namespaces
        last = None
        for i in range(1, switches + 1):
            sw = self.switch(f"s{i}", i)
            self.addLink(self.host(f"h{i}"), sw)
            if last:
                self.addLink(last, sw)
            last = sw
        if namespaces:
            m0 = self.addSwitch(self.prefix + "m0", cls=MgmtSwitch, dpid=f"{0xfe:016x}")
            for c in range(1, controllers + 1):
                self.addLink(self.addHost(self.prefix + f"c{c}", ip=f"{MGMT_NET}.{c}/24"), m0)
            self.addLink(self.addHost(self.prefix + "mgmt", inNamespace=False,
                                      ip=f"{MGMT_NET}.254/24"), m0)

    def controller_nodes(self) -> List[Tuple[str, str]]:
        """(node name or '' for loopback, address) for each controller instance."""
        if not self.namespaces:
            return [("", "127.0.0.1")] * self.controller_count
        return [(self.prefix + f"c{c}", f"{MGMT_NET}.{c}")
                for c in range(1, self.controller_count + 1)]


#: For `mn --custom topologies/testbeds.py --topo NAME,...` (also see topologies/__init__.py).
topos = {
    "sdnlinear": LinearTopo,
    "sdntree": TreeTopo,
    "lime": LimeTopo,
    "limeensemble": LimeEnsembleTopo,
    "vnm": VnmTopo,
    "meta": MetaTopo,
}
