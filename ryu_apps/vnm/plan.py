"""The layout of a whole-network migration (ryu_apps.vnm.core), planned from the wiring. No I/O.

The operator names the pairs (old switch -> its counterpart in the new network) and the tunnel
switch; everything else is read from the wiring (a lime_shim.plan.Topology, read from the machine
by sdnmig.lime_topo), so nobody has to count ports:

| layout field | planned as                                                                      |
|--------------|---------------------------------------------------------------------------------|
| uplinks[o]   | [o's first port to the tunnel switch, its counterpart's first port to it]       |
| patch[o]     | the tunnel switch's ends of those two links                                     |
| steps        | lime_shim.plan.ensemble_request(pairs, via=tunnel switch), the tunnels taking   |
|              | the same first links; empty "neighbours" dropped (the core refuses any)         |
| hosts        | every old switch's port to a host, onto its counterpart's port to the same host |
|              | (same Peer.host); a host with no such port is an error (it would be cut off     |
|              | when the old network is retired). Named as the operator says, else "0x11:4"     |

The result is checked with core.layout_from before it is returned: a planned layout is one the
VNM app takes.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from lime_shim import plan as lime_plan
from lime_shim.plan import PlanError, Topology
from ryu_apps.vnm import core
from ryu_apps.vnm.core import VnmError

Place = Tuple[int, int]  # (switch, port)


def layout(topo: Topology, pairs: Mapping[int, int], tunnel_switch: int,
           names: Optional[Mapping[str, Place]] = None) -> Dict[str, Any]:
    """The layout document for migrating the old switches of `pairs` onto their counterparts
    through `tunnel_switch`; `names`: the operator's host names for (old switch, port)."""
    if not pairs:
        raise VnmError("pairs must name at least one old switch and its counterpart")
    steps = [{k: v for k, v in s.items() if k != "neighbours" or v}
             for s in lime_plan.ensemble_request(topo, pairs, via=tunnel_switch)["steps"]]
    ends = {o: (_uplink(topo, o, tunnel_switch), _uplink(topo, n, tunnel_switch))
            for o, n in sorted(pairs.items())}
    doc = {"pairs": {hex(o): hex(n) for o, n in sorted(pairs.items())},
           "tunnel_switch": hex(tunnel_switch),
           "patch": {hex(o): [old[1], new[1]] for o, (old, new) in ends.items()},
           "uplinks": {hex(o): [old[0], new[0]] for o, (old, new) in ends.items()},
           "steps": steps,
           "hosts": _hosts(topo, pairs, names or {})}
    core.layout_from(doc)
    return doc


def _uplink(topo: Topology, switch: int, tunnel_switch: int) -> Tuple[int, int]:
    """(switch's port, the tunnel switch's port) of the first link between them."""
    links = lime_plan.links_between(topo, switch, tunnel_switch)
    if not links:
        raise VnmError(f"{switch:#x} has no link to the tunnel switch {tunnel_switch:#x}")
    return links[0]


def _hosts(topo: Topology, pairs: Mapping[int, int], names: Mapping[str, Place]
           ) -> Dict[str, Dict[str, Any]]:
    moves: Dict[Place, Dict[str, Any]] = {}
    for old, new in sorted(pairs.items()):
        for port, peer in sorted(topo[old].items()):
            if peer.host is None:
                continue
            try:
                there = lime_plan.move_host_request(topo, old, port, new)["onto_port"]
            except PlanError:
                raise VnmError(f"the host on port {port} of {old:#x} ({peer.host}) has no port "
                               f"on {new:#x}: it could not move before the old network is "
                               "retired") from None
            moves[(old, port)] = {"switch": hex(old), "port": port, "onto": hex(new),
                                  "onto_port": there}
    named: Dict[Place, str] = {}
    for name, place in sorted(names.items()):
        if place not in moves:
            raise VnmError(f"host {name}: port {place[1]} of {place[0]:#x} leads to no host of "
                           f"an old switch (hosts on {_places(moves) or 'none'})")
        if place in named:
            raise VnmError(f"hosts {named[place]} and {name} are both on port {place[1]} of "
                           f"{place[0]:#x}")
        named[place] = name
    out: Dict[str, Dict[str, Any]] = {}
    for place, move in sorted(moves.items()):
        name = named.get(place, _place(place))
        if name in out:
            raise VnmError(f"host name {name} is given to two ports")
        out[name] = move
    return out


def _place(place: Place) -> str:
    return f"{place[0]:#x}:{place[1]}"


def _places(moves: Mapping[Place, Any]) -> str:
    return ", ".join(_place(p) for p in sorted(moves))

