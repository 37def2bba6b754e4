"""LIME's migration operations on a logical switch, carried out through the shim's adapter.

Each operation checks everything it can before it changes anything, and undoes what it did if a
step fails, so a refused operation leaves the map, the rules and the neighbours as they were.

| operation | steps                                                                         |
|-----------|-------------------------------------------------------------------------------|
| clone S onto S' | S' becomes an instance (every rule copied, translated; S takes its       |
|           | migration form); a barrier on every instance (S' confirmed its rules, else    |
|           | undone); then each given neighbour: a second input (the link to S'), then its |
|           | output moved to that link (make before break); the links are recorded        |
| retire I  | neighbours sending to I moved to the other instance first (retiring the clone |
|           | rolls a migration back); a quiet moment; I leaves the map and loses the       |
|           | shim's rules; neighbours drop the input from I; a port down only on I is up  |
| status    | each logical switch's instances and recorded links                            |
"""
from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any, Dict, List, Tuple

from lime_shim import ofconv
from lime_shim.mapping import Instance, Local, LogicalSwitch, MappingError
from lime_shim.model import is_physical
from sdnmig import compat

if TYPE_CHECKING:
    from lime_shim.app import LimeShim

BARRIER_TIMEOUT_S = 5.0
RETIRE_QUIET_S = 0.2  # packets already inside the instance being retired get out


class Operations:
    def __init__(self, shim: "LimeShim") -> None:
        self.shim = shim

    def run(self, req: Dict[str, Any]) -> Dict[str, Any]:
        """`clone`: {switch, onto, ports: {lport: onto's port}, neighbours: [[ndpid, nport
        (logical, toward switch), nport's physical port toward onto]]}; `retire`: {switch,
        instance}; `status`: {}."""
        op = req.get("op")
        if op == "status":
            return self.status()
        if op not in ("clone", "retire"):
            raise ValueError(f"unknown operation {op!r}")
        dpid = int(req["switch"])
        ls = self.shim.map.logical(dpid)
        if dpid in self.shim.busy:
            raise ValueError(f"logical switch {dpid:#x} is busy with another operation")
        self.shim.busy.add(dpid)
        try:
            if op == "clone":
                ports = {int(k): int(v) for k, v in req["ports"].items()}
                neighbours = [tuple(int(x) for x in n) for n in req.get("neighbours", [])]
                return self.clone(ls, int(req["onto"]), ports, neighbours)
            return self.retire(ls, int(req["instance"]))
        finally:
            self.shim.busy.discard(dpid)

    def status(self) -> Dict[str, Any]:
        return {"switches": {f"{ls.dpid:#x}": sorted(f"{d:#x}" for d in ls.instances)
                             for ls in self.shim.map},
                "links": {f"{k:#x}": v for k, v in self.shim.links.items()}}  # [n, port, old, new, onto]

    # -- clone --------------------------------------------------------------------------------------
    def clone(self, ls: LogicalSwitch, onto: int, ports: Dict[int, int],
              neighbours: List[Tuple[int, ...]]) -> Dict[str, Any]:
        shim = self.shim
        if ls.migrating:
            raise ValueError(f"logical switch {ls.dpid:#x} is already migrating (instances "
                             f"{sorted(hex(d) for d in ls.instances)}): retire one first")
        if onto not in shim.spares:
            raise ValueError(f"clone target {onto:#x} is not a spare (lime_spares)")
        if onto not in shim.phys or shim.roles is None or not shim.roles.is_master(onto):
            raise ValueError(f"clone target {onto:#x} is not connected as ours (MASTER)")
        if sorted(ports) != sorted(ls.ports):
            raise ValueError(f"the port map must name every port of {ls.dpid:#x}: {list(ls.ports)}")
        known = set(shim.phys[onto].ports)
        for pp in ports.values():
            if pp not in known:
                raise ValueError(f"clone target {onto:#x} has no port {pp}")
        inst = Instance(onto, {lp: Local(pp) for lp, pp in ports.items()},
                        {pp: lp for lp, pp in ports.items()})
        shim.map.check_instance(ls, inst)
        moves = self._check_neighbours(ls, neighbours)
        started = time.monotonic()
        shim.map.add_instance(ls.dpid, inst)
        shim.reinstall(ls)  # the clone gets every rule; the original takes its migration form
        if not self._barrier(ls):
            self._drop_instance(ls, onto)
            raise ValueError(f"clone target {onto:#x} did not confirm its rules: clone undone")
        links = []
        for n, nport, new in moves:  # make before break: a second input first, then the output
            ninst = n.instances[n.dpid]
            old = ninst.local(nport)
            shim.map.set_instance(n.dpid, _with(ninst, ins={new: nport}))
            shim.reinstall(n)
            shim.map.set_instance(n.dpid, _with(n.instances[n.dpid], out={nport: Local(new)}))
            shim.reinstall(n)
            links.append([n.dpid, nport, old, new, onto])
        shim.links[ls.dpid] = links
        shim.save()
        return {"switch": ls.dpid, "instances": sorted(ls.instances),
                "ms": round((time.monotonic() - started) * 1000, 1)}

    def _check_neighbours(self, ls: LogicalSwitch, neighbours: List[Tuple[int, ...]]
                          ) -> List[Tuple[LogicalSwitch, int, int]]:
        moves = []
        for item in neighbours:
            if len(item) != 3:
                raise ValueError(f"a neighbour is [dpid, port toward the switch, port toward "
                                 f"the clone], not {list(item)}")
            ndpid, nport, new = item
            n = self.shim.map.logical(ndpid)
            if n.migrating or ndpid not in self.shim.phys or n.dpid == ls.dpid:
                raise ValueError(f"neighbour {ndpid:#x} cannot be rewired now")
            ninst = n.instances[n.dpid]
            if nport not in n.ports or ninst.local(nport) is None:
                raise ValueError(f"neighbour {ndpid:#x} has no port {nport}")
            if not is_physical(new) or new not in self.shim.phys[ndpid].ports or new in ninst.ins:
                raise ValueError(f"neighbour {ndpid:#x} port {new} is not a free port of it")
            self.shim.map.check_instance(n, _with(ninst, ins={new: nport}, out={nport: Local(new)}))
            moves.append((n, nport, new))
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
        for key in [k for k in shim.copies if k[0] == pdpid]:
            del shim.copies[key]
        dp = shim.phys.get(pdpid)
        if dp is not None:
            dp.send_msg(ofconv.flow_delete_cookie_all(dp))
        shim.reinstall(ls)

    # -- retire -------------------------------------------------------------------------------------
    def retire(self, ls: LogicalSwitch, pdpid: int) -> Dict[str, Any]:
        shim = self.shim
        ls.instance(pdpid)
        if not ls.migrating:
            raise MappingError(f"{pdpid:#x} is the last instance of {ls.dpid:#x}: it cannot be "
                               "retired")
        links = shim.links.get(ls.dpid, [])
        started = time.monotonic()
        for ndpid, nport, old, new, onto in links:  # nobody sends to the instance that goes
            n = shim.map.logical(ndpid)
            stay = old if pdpid == onto else new  # retiring the clone rolls the migration back
            shim.map.set_instance(ndpid, _with(n.instances[ndpid], out={nport: Local(stay)}))
            shim.reinstall(n)
        compat.hub.sleep(RETIRE_QUIET_S)
        self._drop_instance(ls, pdpid)  # the rest back in the one-instance form (timeouts kept)
        for ndpid, nport, old, new, onto in links:
            n = shim.map.logical(ndpid)
            gone = new if pdpid == onto else old
            ninst = n.instances[ndpid]
            ins = {p: lp for p, lp in ninst.ins.items() if p != gone}
            shim.map.set_instance(ndpid, Instance(ninst.dpid, dict(ninst.out), ins))
            shim.reinstall(n)
        for lport, up in shim.ports[ls.dpid].instance_gone(pdpid):
            desc = shim.ldps[ls.dpid].ports.get(lport)
            if desc is not None and up:
                shim.report_port(ls, lport, shim.ldps[ls.dpid].ofproto.OFPPR_MODIFY, desc)
        shim.links.pop(ls.dpid, None)
        shim.save()
        return {"switch": ls.dpid, "instances": sorted(ls.instances),
                "ms": round((time.monotonic() - started) * 1000, 1)}


def _with(inst: Instance, ins: Dict[int, int] = None, out: Dict[int, Any] = None) -> Instance:
    """A copy of the instance with these inputs and output places added or replaced (the map
    checks a copy before anything is changed)."""
    new = copy.deepcopy(inst)
    new.ins.update(ins or {})
    new.out.update(out or {})
    return new
