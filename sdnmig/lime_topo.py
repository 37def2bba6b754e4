"""The wiring of this machine's Open vSwitch bridges, for planning LIME operations (lime_shim.plan).

Nothing records which bridge port is linked to what, so it is read from the kernel: OVS gives
each bridge's interfaces and their OpenFlow port numbers; each veth's peer is its `iflink`
(/sys/class/net/<if>/iflink). A peer in this namespace that is another bridge's interface is a
switch-to-switch link; a peer in another namespace (`ip -j link` shows `link_netnsid`) is a host
(Mininet puts each host in its own namespace, so two ports whose peers share a netns reach the
same host); anything else is treated as a host of its own. Datapath ids repeat across
unrelated networks on one machine (every testbed has a switch 1), so the bridges can be limited
to those of one controller. `topology()` does the I/O;
`build()` is the pure part, tested on hand-written input.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from lime_shim.plan import Peer
from sdnmig import ovs
from sdnmig.errors import SdnmigError

SYS_NET = Path("/sys/class/net")


def build(dpids: Mapping[str, int], ifaces: Mapping[str, Tuple[str, int]],
          links: List[Dict[str, Any]], iflink: Mapping[str, int]) -> Dict[int, Dict[int, Peer]]:
    """dpids: bridge -> dpid; ifaces: interface -> (bridge, ofport); links: `ip -j link show`
    entries (ifindex, ifname, link_netnsid); iflink: interface -> its peer's ifindex."""
    by_index = {e["ifindex"]: e for e in links}
    by_name = {e["ifname"]: e for e in links}
    seen: Dict[int, str] = {}
    for bridge, dpid in sorted(dpids.items()):
        if seen.setdefault(dpid, bridge) != bridge:
            raise SdnmigError(f"bridges {seen[dpid]} and {bridge} both have datapath id "
                              f"{dpid:#x}: plan for one controller's bridges (--controller)")
    topo: Dict[int, Dict[int, Peer]] = {dpids[b]: {} for b in dpids}
    for name, (bridge, ofport) in ifaces.items():
        if bridge not in dpids:
            continue
        topo[dpids[bridge]][ofport] = _peer(name, by_name.get(name), by_index, iflink, ifaces,
                                            dpids)
    return topo


def _peer(name: str, me: Optional[Dict[str, Any]], by_index: Mapping[int, Dict[str, Any]],
          iflink: Mapping[str, int], ifaces: Mapping[str, Tuple[str, int]],
          dpids: Mapping[str, int]) -> Peer:
    if me is not None and me.get("link_netnsid") is not None:
        return Peer(host=f"netns:{me['link_netnsid']}")
    index = iflink.get(name)
    other = by_index.get(index) if index is not None and me is not None \
        and index != me["ifindex"] else None
    if other is not None and other["ifname"] in ifaces:
        bridge, ofport = ifaces[other["ifname"]]
        if bridge in dpids:
            return Peer(switch=dpids[bridge], port=ofport)
    return Peer(host=f"if:{other['ifname'] if other else name}")


# -- reading the machine --------------------------------------------------------------------------

def _run(cmd: List[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SdnmigError(f"{cmd[0]}: {e}") from None
    if out.returncode != 0:
        raise SdnmigError(f"{' '.join(cmd)}: {(out.stderr.strip().splitlines() or ['failed'])[-1]}")
    return out.stdout


def _dpids() -> Dict[str, int]:
    """bridge -> datapath id (datapath_id, or other_config:datapath-id before OVS filled it)."""
    out = ovs.bridge_dpids()
    rows = json.loads(ovs.vsctl("--format=json", "--columns=name,other_config", "list", "bridge"))
    for name, other in rows["data"]:
        config = dict(other[1]) if isinstance(other, list) and other[0] == "map" else {}
        if name not in out and config.get("datapath-id"):
            out[name] = int(config["datapath-id"], 16)
    return out


def _ifaces(bridges: List[str]) -> Dict[str, Tuple[str, int]]:
    """interface -> (bridge, OpenFlow port), for the bridges' interfaces with a port number."""
    rows = json.loads(ovs.vsctl("--format=json", "--columns=name,ofport", "list", "interface"))
    ofports = {name: port for name, port in rows["data"] if isinstance(port, int) and port > 0}
    out = {}
    for bridge in bridges:
        for name in ovs.vsctl("list-ifaces", bridge).split():
            if name in ofports:
                out[name] = (bridge, ofports[name])
    return out


def _iflink(names: List[str]) -> Dict[str, int]:
    out = {}
    for name in names:
        try:
            out[name] = int((SYS_NET / name / "iflink").read_text())
        except (OSError, ValueError):
            continue  # gone meanwhile, or not a kernel interface (a userspace-only port)
    return out


def topology(controller: Optional[str] = None) -> Dict[int, Dict[int, Peer]]:
    """The bridges of this machine (those with `controller`, an OpenFlow target such as
    tcp:127.0.0.1:6653, among their controllers, if given): port -> what is at its other end.
    A neighbour that is not among them is seen as a host."""
    dpids = _dpids()
    if controller is not None:
        links = ovs.controller_links()
        dpids = {b: d for b, d in dpids.items()
                 if any(c.target == controller for c in links.get(b, []))}
    ifaces = _ifaces(sorted(dpids))
    links = json.loads(_run(["ip", "-d", "-j", "link", "show"]) or "[]")
    return build(dpids, ifaces, links, _iflink(sorted(ifaces)))
