"""LIME operation requests, planned from the wiring and checked before they are sent. No I/O.

The shim needs, to clone switch S onto spare S', where each logical port of S lives on S' and
which neighbours to rewire; people should only have to say "clone 3 onto 0x103". The wiring
(`Topology`: for each bridge, what is at the other end of each port) is read elsewhere
(sdnmig.lime_topo); here it becomes a request. For each logical port p of S (S's ports minus
those linked to spares):

| p leads to                                    | the request gets                                 |
|-----------------------------------------------|--------------------------------------------------|
| neighbour N, also moved (ensemble) to N', and | ports[p] = S' port to N' (the ensemble moves     |
| S' links to N'                                | together: no neighbour to rewire)                |
| neighbour N, and S' links to N                | ports[p] = S' port to N; neighbours += [N, N's   |
|                                               | port to S, N's port to S']                       |
| a host, or a neighbour S' cannot reach        | tunnels[p] = [S' port of the S-S' link, S port   |
|                                               | of it] (no such link: the plan fails)            |
| the same, with a tunnel switch `via` given    | tunnels[p] = [S' port to via, S port to via]     |
|                                               | (the first link of each; none: the plan fails)   |

The ensemble row is checked first: a neighbour that moves too is reached at its new place.
A tunnel switch (`via`, the VNM testbed's t0) joins S and S' when no direct link does: it counts
as a spare (S's links to it are no logical ports, it is never paired as a neighbour).
Several parallel links to one neighbour are paired in port order. A host is moved later
(`move_host`) to the port of the instance whose other end is the same host (same netns).

`check` validates a request body for an operation (known fields only, whole numbers), the same
for the command line and the HTTP API.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple

from sdnmig.errors import SdnmigError


class PlanError(SdnmigError, ValueError):
    """The wiring does not allow the operation asked for, or a request is malformed."""


@dataclass(frozen=True)
class Peer:
    """What is at the other end of a bridge port: a switch's port, or a host (any other end)."""

    switch: Optional[int] = None  # the neighbour's dpid
    port: Optional[int] = None    # the neighbour's port of the link
    host: Optional[str] = None    # a name for the host (e.g. its netns): same name, same host


Topology = Mapping[int, Mapping[int, Peer]]  # dpid -> physical port -> its other end


def _ports(topo: Topology, dpid: int) -> Mapping[int, Peer]:
    if dpid not in topo:
        raise PlanError(f"no bridge with datapath id {dpid:#x}")
    return topo[dpid]


def links_between(topo: Topology, a: int, b: int) -> List[Tuple[int, int]]:
    """(a's port, b's port) of every a-b link, in a's port order."""
    return sorted((p, peer.port) for p, peer in _ports(topo, a).items()
                  if peer.switch == b and peer.port is not None)


def logical_ports(topo: Topology, switch: int, spares: Iterable[int]) -> List[int]:
    """The switch's ports the apps see: all but the links to spares."""
    spare = set(spares)
    return sorted(p for p, peer in _ports(topo, switch).items() if peer.switch not in spare)


def clone_request(topo: Topology, switch: int, onto: int,
                  ensemble: Optional[Mapping[int, int]] = None,
                  spares: Iterable[int] = (), via: Optional[int] = None) -> Dict[str, Any]:
    """The clone (or freeze) request for `switch` onto `onto`; `ensemble` maps the other switches
    moved in the same operation to their targets; `spares` are further bridges to leave out;
    `via`, a tunnel switch to tunnel through instead of a direct `switch`-`onto` link."""
    others = dict(ensemble or {})
    others.pop(switch, None)
    _ports(topo, onto)
    spare = {onto, *others.values(), *spares}
    if switch in spare:
        raise PlanError(f"{switch:#x} is a clone target itself")
    if via is not None:
        _ports(topo, via)
        if via in {switch, onto, *others, *others.values()}:
            raise PlanError(f"the tunnel switch {via:#x} is also moved or a clone target")
        spare.add(via)
    ports: Dict[int, int] = {}
    tunnels: Dict[int, List[int]] = {}
    neighbours: List[List[int]] = []
    pairs = _pairings(topo, switch, onto, others, spare)
    home = _home(topo, switch, onto, via)
    for p in logical_ports(topo, switch, spare):
        paired = pairs.get(p)
        if paired is not None:
            ports[p] = paired[0]
            if paired[1] is not None:
                peer = topo[switch][p]
                neighbours.append([peer.switch, peer.port, paired[1]])
        elif home:
            tunnels[p] = list(home[0])
        else:
            what = topo[switch][p]
            end = f"switch {what.switch:#x}" if what.switch is not None else f"host {what.host}"
            raise PlanError(f"port {p} of {switch:#x} (to {end}) cannot be reached from "
                            f"{onto:#x}, and there is no {_missing(topo, switch, onto, via)} "
                            f"to tunnel it")
    return {"switch": switch, "onto": onto, "ports": ports, "tunnels": tunnels,
            "neighbours": neighbours}


def _home(topo: Topology, switch: int, onto: int, via: Optional[int]) -> List[Tuple[int, int]]:
    """[(onto's port, switch's port)] of the way a tunnel takes: the direct links, or the first
    link of each to the tunnel switch (none: no way)."""
    if via is None:
        return links_between(topo, onto, switch)
    to_onto, to_switch = links_between(topo, onto, via), links_between(topo, switch, via)
    return [(to_onto[0][0], to_switch[0][0])] if to_onto and to_switch else []


def _missing(topo: Topology, switch: int, onto: int, via: Optional[int]) -> str:
    if via is None:
        return f"{switch:#x}-{onto:#x} link"
    lacking = [d for d in (switch, onto) if not links_between(topo, d, via)]
    return " nor ".join(f"{d:#x}-{via:#x} link" for d in lacking) + " (tunnel switch)"


def _pairings(topo: Topology, switch: int, onto: int, others: Mapping[int, int],
              spare: Iterable[int] = ()) -> Dict[int, Tuple[int, Optional[int]]]:
    """Logical port -> (onto's port, the neighbour's port toward onto or None in an ensemble);
    spares (their links are no logical ports) are never paired."""
    out: Dict[int, Tuple[int, Optional[int]]] = {}
    by_neighbour: Dict[int, List[int]] = {}
    left_out = set(spare)
    for p, peer in sorted(_ports(topo, switch).items()):
        if peer.switch is not None and peer.switch != switch and peer.switch not in left_out:
            by_neighbour.setdefault(peer.switch, []).append(p)
    for n, mine in by_neighbour.items():
        moved = others.get(n)
        links = links_between(topo, onto, moved) if moved is not None else []
        if links:
            out.update((p, (theirs, None)) for p, (theirs, _) in zip(mine, links))
            continue
        out.update((p, (theirs, nport)) for p, (theirs, nport)
                   in zip(mine, links_between(topo, onto, n)))
    return out


def ensemble_request(topo: Topology, pairs: Mapping[int, int], spares: Iterable[int] = (),
                     via: Optional[int] = None) -> Dict[str, Any]:
    """Clone every switch of `pairs` onto its target, as one all-or-nothing operation (tunnels
    through the tunnel switch `via`, if given)."""
    if not pairs:
        raise PlanError("an ensemble needs at least one switch=target pair")
    targets = list(pairs.values())
    if len(set(targets)) != len(targets):
        raise PlanError("two switches of the ensemble have the same target")
    spare = list(spares)
    return {"steps": [clone_request(topo, s, t, pairs, spare, via)
                      for s, t in sorted(pairs.items())]}


def move_host_request(topo: Topology, switch: int, port: int, onto: int) -> Dict[str, Any]:
    """Move the host on logical port `port` of `switch` to its link with instance `onto`."""
    peer = _ports(topo, switch).get(port)
    if peer is None or peer.host is None:
        raise PlanError(f"port {port} of {switch:#x} does not lead to a host")
    there = sorted(p for p, other in _ports(topo, onto).items() if other.host == peer.host)
    if not there:
        raise PlanError(f"{onto:#x} has no link to the host on port {port} of {switch:#x} "
                        f"({peer.host})")
    return {"switch": switch, "port": port, "onto": onto, "onto_port": there[0]}


# -- checking request bodies ----------------------------------------------------------------------

def number(value: Any, what: str) -> int:
    """A whole number: an int, or text in decimal or 0x-hex (JSON object keys are text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        whole = value
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            whole = int(text[2:], 16) if text.startswith("0x") else int(text, 10)
        except ValueError:
            raise PlanError(f"{what} {value!r} is not a whole number") from None
    else:
        raise PlanError(f"{what} {value!r} is not a whole number")
    if not 0 <= whole < 1 << 64:
        raise PlanError(f"{what} {value!r} is out of range")
    return whole


def _list(value: Any, what: str, length: Optional[int] = None) -> List[Any]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise PlanError(f"{what} must be a list" + (f" of {length}" if length else "") +
                        f", not {value!r}")
    return value


def _dict(value: Any, what: str) -> Dict[Any, Any]:
    if not isinstance(value, dict):
        raise PlanError(f"{what} must be a JSON object, not {value!r}")
    return value


def _port_map(value: Any, what: str) -> Dict[int, int]:
    return {number(k, f"{what} key"): number(v, f"{what}[{k}]")
            for k, v in _dict(value, what).items()}


def _tunnels(value: Any, what: str) -> Dict[int, List[int]]:
    return {number(k, f"{what} key"): [number(x, f"{what}[{k}]")
                                       for x in _list(v, f"{what}[{k}]", 2)]
            for k, v in _dict(value, what).items()}


def _neighbours(value: Any, what: str) -> List[List[int]]:
    return [[number(x, what) for x in _list(item, f"a neighbour ({what})", 3)]
            for item in _list(value, what)]


def _relay(value: Any, what: str) -> List[int]:
    """[the target's port toward the switch, the switch's port toward the target]: the target
    relays to the switch instead of holding the rules (Tunnel ASAP)."""
    return [number(x, what) for x in _list(value, what, 2)]


Field = Callable[[Any, str], Any]
_CLONE: Dict[str, Tuple[Field, bool]] = {  # field -> (check, required)
    "switch": (number, True), "onto": (number, True), "ports": (_port_map, False),
    "tunnels": (_tunnels, False), "neighbours": (_neighbours, False), "relay": (_relay, False)}
_RETIRE = {"switch": (number, True), "instance": (number, True)}
_MOVE = {"switch": (number, True), "port": (number, True), "onto": (number, True),
         "onto_port": (number, True)}


def _fields(body: Any, spec: Mapping[str, Tuple[Field, bool]], what: str) -> Dict[str, Any]:
    body = _dict(body, what)
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise PlanError(f"{what}: unknown field(s) {', '.join(unknown)}: use "
                        f"{', '.join(sorted(spec))}")
    out = {}
    for name, (conv, required) in spec.items():
        if name in body:
            out[name] = conv(body[name], name)
        elif required:
            raise PlanError(f"{what}: field {name!r} is required")
    if "ports" in out or "tunnels" in out:
        both = sorted(set(out.get("ports", {})) & set(out.get("tunnels", {})))
        if both:
            raise PlanError(f"{what}: port(s) {both} are in both ports and tunnels")
    return out


def _steps(spec: Mapping[str, Tuple[Field, bool]]) -> Field:
    def check(value: Any, what: str) -> List[Dict[str, Any]]:
        steps = [_fields(s, spec, f"step {n + 1}") for n, s in enumerate(_list(value, what))]
        if not steps:
            raise PlanError(f"{what} must name at least one step")
        return steps
    return check


OPS: Dict[str, Mapping[str, Tuple[Field, bool]]] = {
    "status": {}, "clone": _CLONE, "freeze": _CLONE, "move_host": _MOVE, "retire": _RETIRE,
    "ensemble": {"steps": (_steps(_CLONE), True)},
    "retire_ensemble": {"steps": (_steps(_RETIRE), True)},
    "promote_ensemble": {"steps": (_steps(_RETIRE), True)},
}


def check(op: str, body: Any) -> Dict[str, Any]:
    """The request for `op` with this body (no "op" in it), checked and with whole numbers."""
    if op not in OPS:
        raise PlanError(f"unknown LIME operation {op!r}: use {', '.join(sorted(OPS))}")
    return {"op": op, **_fields(body, OPS[op], op)}
