"""LIME's migration operations on logical switches, carried out through the shim's adapter.

Each operation checks everything it can before it changes anything, and undoes what it did if a
step fails, so a refused operation leaves the map, the rules and the neighbours as they were.

| operation  | steps                                                                         |
|------------|-------------------------------------------------------------------------------|
| clone S onto S' | S' becomes an instance: each logical port local on S' (`ports`) or reached |
|            | through a tunnel over the S-S' link (`tunnels`: hosts, and neighbours S' has no |
|            | link to); every rule copied, translated; S takes its migration form; a barrier |
|            | on every instance (S' confirmed its rules, else undone); then each given       |
|            | neighbour: a second input (the link to S'), then its output moved to that link |
|            | (make before break); the links are recorded. A rewire failing: the neighbours  |
|            | rewired so far put back, one by one, and the clone undone                      |
| ensemble   | several clones as one: all checked first; one failing undoes those before it   |
| move_host  | the host's port becomes local on the instance it moves to (its new interface   |
|            | an input there, rules installed, barrier), then the instance it leaves tunnels |
|            | to it; the old interface stays an input until its instance is retired (make    |
|            | before break: the host itself then switches interfaces)                         |
| retire I   | refused while a port is local only on I (a host not moved yet); neighbours     |
|            | sending to I moved to the other instance first (retiring the clone rolls a     |
|            | migration back); a quiet moment; I leaves the map and loses the shim's rules;  |
|            | neighbours drop the input from I; a port down only on I is up                  |
| retire_ensemble | several retires, all checked first, one quiet moment for all              |
| (clone with | the target is a relay (Tunnel ASAP): it gets no rules, only its inputs sent |
|  `relay`)  | tagged to the switch, which takes them in as its own input's (translate.py)   |
| promote_ensemble | relays become full instances: the rules (barrier; failing: undone),    |
|            | then the relaying stops, a quiet moment, then the relayed packets' ends go    |
| freeze     | the baseline LIME is measured against (freeze and copy): S stops forwarding   |
|            | (a drop-all rule above the others, confirmed by a barrier), its final counters |
|            | are read, its rules deleted; S' takes every rule as the only instance, a       |
|            | barrier, then the neighbours' outputs are moved (break before make)            |
| status     | each logical switch's instances and recorded links, and the direct switches    |

Clone, ensemble and freeze first adopt the direct switches whose map they change (the switch and
the neighbours they rewire; see "Direct switches" in app.py): a switch whose rules cannot be read
refuses the operation before anything else changes.
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Tuple

from lime_shim import ofconv
from lime_shim.mapping import (VID_MAX, VID_MIN, Instance, Local, LogicalSwitch, Mapping,
                               MappingError, Relay, Tunnel)
from lime_shim.model import Rule, is_physical
from lime_shim.translate import TUNNEL_COOKIE, TUNNEL_PRIORITY
from sdnmig import compat

if TYPE_CHECKING:
    from lime_shim.app import LimeShim

BARRIER_TIMEOUT_S = 5.0
RETIRE_QUIET_S = 0.2  # packets already inside the instance being retired get out
Move = Tuple[LogicalSwitch, int, int]  # neighbour, its logical port toward the switch, new port
FREEZE = Rule(TUNNEL_PRIORITY, (), (), cookie=TUNNEL_COOKIE)  # above every rule: drop all
ENSEMBLES = ("ensemble", "retire_ensemble", "promote_ensemble")


class Operations:
    def __init__(self, shim: "LimeShim") -> None:
        self.shim = shim

    def run(self, req: Dict[str, Any]) -> Dict[str, Any]:
        """One request (the fields of each are in the CLI's help, `sdnmig lime --help`)."""
        op = req.get("op")
        if op == "status":
            return self.status()
        runs: Dict[str, Callable[[Dict[str, Any]], Dict[str, Any]]] = {
            "clone": self._clone_req, "freeze": self._freeze_req, "move_host": self._move_req,
            "retire": self._retire_req, "ensemble": self._ensemble_req,
            "retire_ensemble": self._retire_ensemble_req,
            "promote_ensemble": self._promote_ensemble_req}
        if op not in runs:
            raise ValueError(f"unknown operation {op!r}")
        steps = req.get("steps") if op in ENSEMBLES else [req]
        if not isinstance(steps, list) or not steps:
            raise ValueError("an ensemble needs a non-empty list of steps")
        dpids = [int(s["switch"]) for s in steps]
        if len(set(dpids)) != len(dpids):
            raise ValueError("an ensemble names a switch twice")
        for dpid in dpids:
            self.shim.map.logical(dpid)
            if dpid in self.shim.busy:
                raise ValueError(f"logical switch {dpid:#x} is busy with another operation")
        self.shim.busy.update(dpids)
        try:
            return runs[op](req)
        finally:
            self.shim.busy.difference_update(dpids)

    def status(self) -> Dict[str, Any]:
        m = self.shim.map
        return {"switches": {f"{ls.dpid:#x}": sorted(f"{d:#x}" for d in ls.instances) for ls in m},
                "places": {f"{ls.dpid:#x}": {f"{d:#x}": {str(lp): _place_text(pl)
                                                         for lp, pl in sorted(i.out.items())}
                                             for d, i in ls.instances.items()}
                           for ls in m if ls.migrating},
                "relays": {f"{ls.dpid:#x}": {f"{d:#x}": _relay_text(i)
                                             for d, i in ls.instances.items() if i.relay}
                           for ls in m if any(i.relay for i in ls.instances.values())},
                "direct": sorted(f"{d:#x}" for d in self.shim.direct),
                "links": {f"{k:#x}": v for k, v in self.shim.links.items()}}  # [n, port, old, new, onto]

    # -- requests -----------------------------------------------------------------------------------
    def _clone_req(self, req: Dict[str, Any]) -> Dict[str, Any]:
        return self._one_switch(req, self._do_clone)

    def _one_switch(self, req: Dict[str, Any],
                    do: Callable[[LogicalSwitch, Instance, List[Move]], None]) -> Dict[str, Any]:
        """A clone or a freeze: checked, the switches it changes adopted, then done."""
        started = time.monotonic()
        ls, inst, moves = self._check_clone(req, self.shim.map)
        self._adopt([ls, *(n for n, _, _ in moves)])
        do(ls, inst, moves)
        return self._done(started, [ls])

    def _ensemble_req(self, req: Dict[str, Any]) -> Dict[str, Any]:
        started = time.monotonic()
        trial = copy.deepcopy(self.shim.map)  # later steps are checked with earlier ones done
        plans = []
        for step in req["steps"]:
            ls, inst, moves = self._check_clone(step, trial)
            trial.add_instance(ls.dpid, inst)
            plans.append((self.shim.map.logical(ls.dpid), inst, moves))
        if len({inst.dpid for _, inst, _ in plans}) != len(plans):
            raise ValueError("two switches of the ensemble are cloned onto the same target")
        ports = [k for _, _, moves in plans for n, nport, new in moves
                 for k in ((n.dpid, nport), (n.dpid, -new))]
        if len(set(ports)) != len(ports):
            raise ValueError("two switches of the ensemble rewire the same port of a neighbour")
        self._adopt([s for ls, _, moves in plans for s in (ls, *(n for n, _, _ in moves))])
        done: List[Tuple[LogicalSwitch, int]] = []
        try:
            for ls, inst, moves in plans:
                self._do_clone(ls, inst, moves)
                done.append((ls, inst.dpid))
        except Exception:
            for ls, onto in reversed(done):  # all or nothing: the clones made so far rolled back
                self.retire(ls, onto)
            raise
        return self._done(started, [ls for ls, _, _ in plans])

    def _move_req(self, req: Dict[str, Any]) -> Dict[str, Any]:
        started = time.monotonic()
        ls = self.shim.map.logical(int(req["switch"]))
        self.move_host(ls, int(req["port"]), int(req["onto"]), int(req["onto_port"]))
        return self._done(started, [ls])

    def _retire_req(self, req: Dict[str, Any]) -> Dict[str, Any]:
        return self._retire_ensemble_req({"steps": [req]})

    def _retire_ensemble_req(self, req: Dict[str, Any]) -> Dict[str, Any]:
        started = time.monotonic()
        steps = []
        for step in req["steps"]:
            ls = self.shim.map.logical(int(step["switch"]))
            steps.append((ls, int(step["instance"])))
            self._check_retire(ls, steps[-1][1])
        self.retire_all(steps)
        return self._done(started, [ls for ls, _ in steps])

    def _promote_ensemble_req(self, req: Dict[str, Any]) -> Dict[str, Any]:
        """Relays become full instances, make before break: first they get the rules (the relay
        rules above them still decide), then they stop relaying, then their homes stop taking
        relayed packets in, once those in flight are through."""
        started = time.monotonic()
        steps: List[Tuple[LogicalSwitch, Instance]] = []
        for step in req["steps"]:
            ls = self.shim.map.logical(int(step["switch"]))
            inst = ls.instance(int(step["instance"]))
            if inst.relay is None and not inst.holds_rules:
                raise ValueError(f"{inst.dpid:#x} is neither a relay nor a full instance")
            if inst.relay is None:
                continue  # promoted already (a finalize repeated after its retire failed)
            steps.append((ls, inst))
        if not steps:
            return self._done(started, [self.shim.map.logical(int(s["switch"]))
                                        for s in req["steps"]])
        shim = self.shim
        for ls, inst in steps:
            shim.map.set_instance(ls.dpid, _with(inst, holds_rules=True))
            shim.reinstall(ls, only=inst.dpid)
        if not all(self._barrier(ls) for ls, _ in steps):
            for ls, inst in steps:
                shim.map.set_instance(ls.dpid, inst)
                shim.reinstall(ls, only=inst.dpid)
            raise ValueError("a relay did not confirm the rules: promotion undone")
        for ls, inst in steps:
            shim.map.set_instance(ls.dpid, _with(inst, holds_rules=True, relay=None))
            shim.reinstall(ls, only=inst.dpid)
        for ls, _ in steps:
            self._barrier(ls)
        compat.hub.sleep(RETIRE_QUIET_S)  # relayed packets still on their way arrive
        for ls, _ in steps:
            shim.reinstall(ls)  # the homes' relay ends go
        return self._done(started, [ls for ls, _ in steps])

    def _freeze_req(self, req: Dict[str, Any]) -> Dict[str, Any]:
        return self._one_switch(req, self.freeze)

    def _adopt(self, switches: Iterable[LogicalSwitch]) -> None:
        """Direct switches whose map is about to change taken over by the shim first."""
        for ls in switches:
            self.shim.adopt(ls)

    def _done(self, started: float, switches: List[LogicalSwitch]) -> Dict[str, Any]:
        self.shim.save()
        ms = round((time.monotonic() - started) * 1000, 1)
        if len(switches) == 1:
            return {"switch": switches[0].dpid, "instances": sorted(switches[0].instances), "ms": ms}
        return {"switches": {f"{ls.dpid:#x}": sorted(ls.instances) for ls in switches}, "ms": ms}

    # -- clone --------------------------------------------------------------------------------------
    def _check_clone(self, req: Dict[str, Any], m: Mapping
                     ) -> Tuple[LogicalSwitch, Instance, List[Move]]:
        """The new instance and the neighbours' moves a clone request asks for, checked against
        the map `m` (the live one, or an ensemble's trial copy)."""
        shim = self.shim
        ls = m.logical(int(req["switch"]))
        onto = int(req["onto"])
        ports = {int(k): int(v) for k, v in req.get("ports", {}).items()}
        tunnels = {int(k): tuple(int(x) for x in v) for k, v in req.get("tunnels", {}).items()}
        neighbours = [tuple(int(x) for x in n) for n in req.get("neighbours", [])]
        if ls.migrating:
            raise ValueError(f"logical switch {ls.dpid:#x} is already migrating (instances "
                             f"{sorted(hex(d) for d in ls.instances)}): retire one first")
        holder = m.owner(onto)
        if holder is not None:
            raise ValueError(f"clone target {onto:#x} is already in use (an instance of logical "
                             f"switch {holder.dpid:#x})")
        if onto not in shim.spares:
            raise ValueError(f"clone target {onto:#x} is not a spare (lime_spares)")
        if onto not in shim.phys or shim.roles is None or not shim.roles.is_master(onto):
            raise ValueError(f"clone target {onto:#x} is not connected as ours (MASTER)")
        if set(ports) & set(tunnels) or sorted([*ports, *tunnels]) != sorted(ls.ports):
            raise ValueError(f"ports and tunnels must name every port of {ls.dpid:#x} once: "
                             f"{list(ls.ports)}")
        (home,) = ls.instances
        known = set(shim.phys[onto].ports)
        for pp in [*ports.values(), *(t[0] for t in tunnels.values())]:
            if pp not in known:
                raise ValueError(f"clone target {onto:#x} has no port {pp}")
        relay = None
        if req.get("relay") is not None:
            via, peer_port = (int(x) for x in req["relay"])
            if via not in known or peer_port not in shim.phys.get(home, _NoPorts).ports:
                raise ValueError(f"relay: [port of {onto:#x} toward {home:#x}, port of "
                                 f"{home:#x} toward {onto:#x}], not {req['relay']}")
            relay = Relay(via, home, peer_port)
        out: Dict[int, Any] = {lp: Local(pp) for lp, pp in ports.items()}
        for lport, t in sorted(tunnels.items()):
            if len(t) != 2 or t[1] not in shim.phys.get(home, _NoPorts).ports:
                raise ValueError(f"tunnel for port {lport}: [port of {onto:#x} toward {home:#x}, "
                                 f"port of {home:#x} toward {onto:#x}], not {list(t)}")
            out[lport] = Tunnel(t[0], _free_vid(m, home, t[1], lport, taken=out.values()),
                                home, t[1])
        inst = Instance(onto, out, {pp: lp for lp, pp in ports.items()}, relay,
                        holds_rules=relay is None)
        m.check_instance(ls, inst)
        return ls, inst, self._check_neighbours(ls, neighbours, m)

    def _do_clone(self, ls: LogicalSwitch, inst: Instance, moves: List[Move]) -> None:
        shim = self.shim
        shim.map.add_instance(ls.dpid, inst)
        shim.reinstall(ls)  # the clone gets every rule; the original takes its migration form
        if not self._barrier(ls):
            self._drop_instance(ls, inst.dpid)
            raise ValueError(f"clone target {inst.dpid:#x} did not confirm its rules: clone undone")
        links: List[List[int]] = []
        was: List[Tuple[LogicalSwitch, Instance]] = []
        try:
            for n, nport, new in moves:  # make before break: a second input, then the output
                ninst = n.instances[n.dpid]
                was.append((n, ninst))
                old = ninst.local(nport)
                shim.map.set_instance(n.dpid, _with(ninst, ins={new: nport}))
                shim.reinstall(n)
                shim.map.set_instance(n.dpid, _with(n.instances[n.dpid], out={nport: Local(new)}))
                shim.reinstall(n)
                links.append([n.dpid, nport, old, new, inst.dpid])
        except Exception as e:
            failed = n.dpid
            for n, ninst in reversed(was):  # each neighbour back as it was, then the clone goes
                shim.map.set_instance(n.dpid, ninst)
                shim.reinstall(n)
            self._drop_instance(ls, inst.dpid)
            if not isinstance(e, ValueError):
                raise  # a bug: undone, and loud
            raise ValueError(f"neighbour {failed:#x} could not be rewired ({e}): clone "
                             "undone") from e
        shim.links[ls.dpid] = links

    def _check_neighbours(self, ls: LogicalSwitch, neighbours: List[Tuple[int, ...]],
                          m: Mapping) -> List[Move]:
        moves = []
        seen = set()
        for item in neighbours:
            if len(item) == 3 and ((item[0], item[1]) in seen or (item[0], -item[2]) in seen):
                raise ValueError(f"neighbour {item[0]:#x} is named twice (port {item[1]} or "
                                 f"{item[2]})")
            seen.update({(item[0], item[1]), (item[0], -item[2])} if len(item) == 3 else ())
            if len(item) != 3:
                raise ValueError(f"a neighbour is [dpid, port toward the switch, port toward "
                                 f"the clone], not {list(item)}")
            ndpid, nport, new = item
            n = m.logical(ndpid)
            if n.migrating or ndpid not in self.shim.phys or n.dpid == ls.dpid:
                raise ValueError(f"neighbour {ndpid:#x} cannot be rewired now")
            ninst = n.instances[n.dpid]
            if nport not in n.ports or ninst.local(nport) is None:
                raise ValueError(f"neighbour {ndpid:#x} has no port {nport}")
            if not is_physical(new) or new not in self.shim.phys[ndpid].ports or new in ninst.ins:
                raise ValueError(f"neighbour {ndpid:#x} port {new} is not a free port of it")
            m.check_instance(n, _with(ninst, ins={new: nport}, out={nport: Local(new)}))
            moves.append((self.shim.map.logical(ndpid), nport, new))
        return moves

    def _barrier(self, ls: LogicalSwitch) -> bool:
        done = compat.hub.Event()
        result: List[bool] = []

        def then(ok: bool) -> None:
            result.append(ok)
            done.set()
        self.shim.internal_barrier(ls, then)
        done.wait(timeout=BARRIER_TIMEOUT_S)
        return bool(result and result[0])

    def _drop_instance(self, ls: LogicalSwitch, pdpid: int) -> None:
        """The instance leaves the map and loses every rule the shim gave it; the others take
        the form the map has now."""
        shim = self.shim
        shim.map.remove_instance(ls.dpid, pdpid)
        self._stop(pdpid)
        shim.reinstall(ls)

    # -- host moves ---------------------------------------------------------------------------------
    def move_host(self, ls: LogicalSwitch, lport: int, onto: int, onto_port: int) -> None:
        shim = self.shim
        to = ls.instance(onto)
        if lport not in ls.ports:
            raise MappingError(f"{lport} is not a port of logical switch {ls.dpid:#x}")
        place = to.out.get(lport)
        if not isinstance(place, Tunnel):
            raise MappingError(f"port {lport} of {ls.dpid:#x} is not tunnelled to {onto:#x}: "
                               f"nothing to move ({_place_text(place)} there)")
        if onto not in shim.phys or onto_port not in shim.phys[onto].ports or onto_port in to.ins:
            raise MappingError(f"{onto_port} is not a free port of {onto:#x}")
        frm = ls.instance(place.peer)
        trial = copy.deepcopy(ls)
        new_to = _with(to, ins={onto_port: lport}, out={lport: Local(onto_port)})
        back = Tunnel(place.peer_port, _free_vid(_one(trial), onto, place.via, lport),
                      onto, place.via)
        new_frm = _with(frm, out={lport: back})
        for inst in (new_to, new_frm):  # both checked before either is changed
            _one(trial).check_instance(trial, inst)
            trial.instances[inst.dpid] = inst
        shim.map.set_instance(ls.dpid, new_to)
        shim.reinstall(ls)
        if not self._barrier(ls):
            shim.map.set_instance(ls.dpid, to)
            shim.reinstall(ls)
            raise ValueError(f"{onto:#x} did not confirm the host's rules: move undone")
        shim.map.set_instance(ls.dpid, new_frm)
        shim.reinstall(ls)

    # -- retire -------------------------------------------------------------------------------------
    def _check_retire(self, ls: LogicalSwitch, pdpid: int) -> None:
        ls.instance(pdpid)
        if not ls.migrating:
            raise MappingError(f"{pdpid:#x} is the last instance of {ls.dpid:#x}: it cannot be "
                               "retired")
        stranded = [lp for lp in ls.ports
                    if not any(i.local(lp) is not None for d, i in ls.instances.items()
                               if d != pdpid)]
        if stranded:
            raise MappingError(f"{pdpid:#x} still has hosts (or links) on port(s) {stranded} of "
                               f"{ls.dpid:#x} that are nowhere else: move them first")
        self.shim.map.check_remove(ls, pdpid)  # (before anything moves: a relay's home stays)

    def retire(self, ls: LogicalSwitch, pdpid: int) -> None:
        self._check_retire(ls, pdpid)
        self.retire_all([(ls, pdpid)])

    def retire_all(self, steps: List[Tuple[LogicalSwitch, int]]) -> None:
        shim = self.shim
        for ls, pdpid in steps:  # nobody sends to the instances that go
            for ndpid, nport, old, new, onto in shim.links.get(ls.dpid, []):
                n = shim.map.logical(ndpid)
                stay = old if pdpid == onto else new  # retiring the clone rolls it back
                shim.map.set_instance(ndpid, _with(n.instances[ndpid], out={nport: Local(stay)}))
                shim.reinstall(n)
        compat.hub.sleep(RETIRE_QUIET_S)
        for ls, pdpid in steps:
            shim.instance_leaving(ls, pdpid)  # its last counts, now that it is quiet
            self._drop_instance(ls, pdpid)  # the rest back in the one-instance form
            for ndpid, nport, old, new, onto in shim.links.pop(ls.dpid, []):
                n = shim.map.logical(ndpid)
                gone = new if pdpid == onto else old
                ninst = n.instances[ndpid]
                ins = {p: lp for p, lp in ninst.ins.items() if p != gone}
                shim.map.set_instance(ndpid, replace(ninst, out=dict(ninst.out), ins=ins))
                shim.reinstall(n)
            shim.instance_ports_gone(ls, pdpid)

    # -- the baseline -------------------------------------------------------------------------------
    def freeze(self, ls: LogicalSwitch, inst: Instance, moves: List[Move]) -> None:
        """Freeze and copy (LIME sec. 2.2): what LIME is compared with. S stops forwarding, its
        final state is read, its rules are copied to S', and S' starts as the neighbours switch
        over. Traffic through S is lost from the freeze until the neighbours send to S'."""
        shim = self.shim
        if inst.relay is not None:
            raise ValueError("freeze and copy moves the whole switch at once: the target cannot "
                             "relay to it")
        if any(isinstance(p, Tunnel) for p in inst.out.values()):
            raise ValueError("freeze and copy moves the whole switch at once: every port of it "
                             "must be local on the target (no tunnels)")
        (old,) = ls.instances
        dp = shim.phys.get(old)
        if dp is None:
            raise ValueError(f"{old:#x} is not connected: nothing to freeze")
        dp.send_msg(ofconv.flow_add_to(dp, FREEZE))
        if not self._barrier(ls):
            self._stop(old)
            shim.reinstall(ls)
            raise ValueError(f"{old:#x} did not confirm the freeze: left as it was")
        shim.instance_leaving(ls, old)  # the final state: its counters, while it is frozen
        before = shim.map.move_whole(ls.dpid, inst)  # S' holds the switch alone; then S stops
        self._stop(old)  # (in this order: no app rule reaches S once it is out of the map)
        shim.reinstall(ls)
        if not self._barrier(ls):
            self._stop(inst.dpid)
            shim.map.restore(ls.dpid, before)
            shim.reinstall(ls)
            raise ValueError(f"clone target {inst.dpid:#x} did not confirm its rules: the switch "
                             f"stays on {old:#x}")
        for n, nport, new in moves:  # switch over
            ninst = n.instances[n.dpid]
            old_port = ninst.local(nport)
            ins = {p: lp for p, lp in ninst.ins.items() if p != old_port}
            ins[new] = nport
            out = dict(ninst.out)
            out[nport] = Local(new)
            shim.map.set_instance(n.dpid, replace(ninst, out=out, ins=ins))
            shim.reinstall(n)

    def _stop(self, pdpid: int) -> None:
        """Every rule the shim gave the bridge deleted, and forgotten."""
        shim = self.shim
        shim.forget(pdpid)
        dp = shim.phys.get(pdpid)
        if dp is not None:
            dp.send_msg(ofconv.flow_delete_cookie_all(dp))


class _NoPorts:
    ports: Dict[int, Any] = {}


def _one(ls: LogicalSwitch) -> Mapping:
    """A map holding only `ls` (its checks only look at the switch itself)."""
    m = Mapping()
    m.switches[ls.dpid] = ls
    return m


def _free_vid(m: Mapping, peer: int, peer_port: int, want: int, taken: Iterable[Any] = ()) -> int:
    """A VLAN id no tunnel into `peer`'s `peer_port` uses: the logical port's own number if free
    (easy to read in a flow dump)."""
    used = {p.vid for ls in m for i in ls.instances.values() for p in i.out.values()
            if isinstance(p, Tunnel) and (p.peer, p.peer_port) == (peer, peer_port)}
    used |= {p.vid for p in taken if isinstance(p, Tunnel) and (p.peer, p.peer_port) ==
             (peer, peer_port)}
    if VID_MIN <= want <= VID_MAX and want not in used:
        return want
    for vid in range(VID_MIN, VID_MAX + 1):
        if vid not in used:
            return vid
    raise MappingError(f"no free VLAN id left on {peer:#x} port {peer_port}")


def _place_text(place: Optional[Any]) -> str:
    if isinstance(place, Local):
        return f"local {place.port}"
    if isinstance(place, Tunnel):
        return f"tunnel vlan {place.vid} via {place.via} to {place.peer:#x}:{place.peer_port}"
    return "none"


_SAME: Any = object()


def _with(inst: Instance, ins: Optional[Dict[int, int]] = None,
          out: Optional[Dict[int, Any]] = None, relay: Any = _SAME,
          holds_rules: Optional[bool] = None) -> Instance:
    """A copy of the instance with these inputs and output places added or replaced, and its
    relay changed if given (the map checks a copy before anything is changed)."""
    new = copy.deepcopy(inst)
    new.ins.update(ins or {})
    new.out.update(out or {})
    if relay is not _SAME:
        new.relay = relay
    if holds_rules is not None:
        new.holds_rules = holds_rules
    return new


def _relay_text(inst: Instance) -> str:
    r = inst.relay
    assert r is not None
    return (f"relay via {r.via} to {r.peer:#x}:{r.peer_port}"
            + ("" if inst.holds_rules else ", no rules"))
