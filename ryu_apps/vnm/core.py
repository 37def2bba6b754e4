"""Whole-network migration (Tunnel ALAP and Tunnel ASAP, the VNM paper) as one state machine over
the LIME shim's operations. No I/O: commands come in with their bodies, the steps to carry out go
out, and the state changes only when the caller says every step succeeded (`commit`).

The old network's switches are LIME logical switches; prepare clones all of them at once (one LIME
ensemble) onto their counterparts in the new network, with every host port reached through the
tunnel switch (VLAN-tagged, patched port to port on the tunnel switch); migrate moves one host
(LIME's make-before-break move_host); finalize retires the old network and removes the patch.
Both algorithms share this; they differ in what the new network holds until finalize:

- ALAP: every rule, at once (LIME's clone), so a packet stays in the network its sender is
  attached to and crosses only at the switch its receiver has left (or not reached yet);
  finalize only removes the old network and the tunnels.
- ASAP: only relay rules (LIME's relay instances): a packet from a moved host jumps to the old
  network at its first hop and back at its last; finalize first installs the rules in the new
  network (LIME's promote_ensemble), then retires the old one.

| state      | command            | checked first                              | steps                           | next      |
|------------|--------------------|--------------------------------------------|---------------------------------|-----------|
| idle       | prepare(alg, lay)  | alg known; layout whole and consistent     | tunnel patch; LIME ensemble     | prepared  |
| finalized  | prepare(alg, lay)  | as from idle (another pair of networks)    | as from idle                    | prepared  |
| prepared   | migrate(host)      | host known, not moved; alg, if named, same | LIME move_host                  | prepared  |
| prepared   | finalize()         | every host moved; alg, if named, same      | [ASAP: LIME promote_ensemble];  | finalized |
|            |                    |                                            | LIME retire_ensemble; unpatch   |           |
| any        | status             | -                                          | -                               | same      |

A refused command raises VnmError with the reason and changes nothing. The caller (the VNM app)
carries the steps out in order. If one fails before any `final` step succeeded, the command has
not happened: the caller runs the `undo` of that step and of those before it, newest first, and
commits nothing. A step without an undo that succeeded stays done (ASAP finalize's promotion,
when the retire after it fails); it is one LIME repeats as a no-op, so the command can simply be
given again. Once a `final` step succeeded (finalize's retire: the old network is gone), the
command has happened: the caller commits, and reports any later step that fails (unpatching is
by cookie, so it can be repeated by hand).

ASAP's relays and their promotion are LIME's (mapping.Relay, operations.promote_ensemble).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from lime_shim.model import VLAN_PRESENT, Output, Rule, is_physical, match_of
from lime_shim.plan import PlanError, check as lime_check, number

ALGORITHMS = ("alap", "asap")
IDLE, PREPARED, FINALIZED = "idle", "prepared", "finalized"
PATCH_COOKIE = 0x7E55E1 << 40   # the tunnel switch's patch (not the shim's mark, 0x11ae << 48)
PATCH_PRIORITY = 100
OPS_CHANNEL = "vnm:ops"        # on the controller instance's own Redis, as the shim's lime:ops
STATE_KEY = "vnm:state"        # Vnm.to_doc(), saved after every command that changed it


class VnmError(PlanError):
    """A command refused: wrong order, bad input, or a layout that does not hold together."""


@dataclass(frozen=True)
class Host:
    """A host to move: on `port` of old switch `switch`, then on `onto_port` of its counterpart."""

    name: str
    switch: int
    port: int
    onto: int
    onto_port: int


@dataclass(frozen=True)
class Layout:
    """The two networks and how they are joined, as the operator's planner read the wiring.
    `patch`: (old switch, tunnel switch's port to it, tunnel switch's port to its counterpart);
    `uplinks`: (old switch, its port to the tunnel switch, its counterpart's port to it);
    `steps`: the LIME ensemble's clone requests (one per old switch)."""

    pairs: Tuple[Tuple[int, int], ...]
    tunnel_switch: int
    patch: Tuple[Tuple[int, int, int], ...]
    uplinks: Tuple[Tuple[int, int, int], ...]
    steps: Tuple[Dict[str, Any], ...] = field(compare=False)  # (dicts: no hash; same pairs)
    hosts: Tuple[Host, ...]

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise VnmError(f"unknown host {name!r}: known {', '.join(h.name for h in self.hosts)}")

    def to_doc(self) -> Dict[str, Any]:
        return {"pairs": {hex(o): hex(n) for o, n in self.pairs},
                "tunnel_switch": hex(self.tunnel_switch),
                "patch": {hex(o): [a, b] for o, a, b in self.patch},
                "uplinks": {hex(o): [a, b] for o, a, b in self.uplinks},
                "steps": [dict(s) for s in self.steps],
                "hosts": {h.name: {"switch": hex(h.switch), "port": h.port, "onto": hex(h.onto),
                                   "onto_port": h.onto_port} for h in self.hosts}}


def layout_from(doc: Any) -> Layout:
    """A layout from its JSON form (the CLI's plan, the HTTP body, Redis), checked whole."""
    try:
        return _layout(doc)
    except VnmError:
        raise
    except PlanError as e:  # a number or a LIME step that is not one
        raise VnmError(f"layout: {e}") from None


def _layout(doc: Any) -> Layout:
    if not isinstance(doc, dict):
        raise VnmError(f"the layout must be a JSON object, not {doc!r}")
    missing = sorted(set(_LAYOUT) - set(doc))
    unknown = sorted(set(doc) - set(_LAYOUT))
    if missing or unknown:
        raise VnmError("the layout " + "; ".join(
            ([f"lacks {', '.join(missing)}"] if missing else []) +
            ([f"has unknown field(s) {', '.join(unknown)}"] if unknown else [])))
    pairs = pairs_from(doc["pairs"])
    t0 = number(doc["tunnel_switch"], "tunnel_switch")
    if t0 in {d for p in pairs for d in p}:
        raise VnmError(f"the tunnel switch {t0:#x} is also one of the networks' switches")
    old = dict(pairs)
    patch = _port_pairs(doc["patch"], old, "patch", "the tunnel switch's port to")
    _once([str(p) for _, a, b in patch for p in (a, b)],
          "the patch uses tunnel-switch port {} twice")
    uplinks = _port_pairs(doc["uplinks"], old, "uplinks", "the port to the tunnel switch of")
    steps = tuple(lime_check("ensemble", {"steps": doc["steps"]})["steps"])
    for s in steps:
        extra = sorted(set(s) - {"switch", "onto", "ports", "tunnels"})
        if extra:
            raise VnmError(f"the step for {s['switch']:#x} may give only ports and tunnels (the "
                           f"networks move together: no neighbour is rewired), not "
                           f"{', '.join(extra)}")
    planned = {(s["switch"], s["onto"]) for s in steps}
    if planned != set(pairs) or len(steps) != len(pairs):
        raise VnmError("the ensemble's steps must clone each old switch onto its counterpart, "
                       f"once: pairs {_show(pairs)}, steps {_show(sorted(planned))}")
    up = _relays(uplinks)
    for s in steps:
        for port, ends in sorted(s.get("tunnels", {}).items()):
            if ends != up[s["switch"]]:
                raise VnmError(f"port {port} of {s['switch']:#x} is tunnelled through {ends}, not "
                               f"through the uplinks to the tunnel switch {up[s['switch']]}")
    hosts = _hosts(doc["hosts"], old)
    tunnelled = {(s["switch"], p) for s in steps for p in s.get("tunnels", {})}
    for h in hosts:
        if (h.switch, h.port) not in tunnelled:
            raise VnmError(f"host {h.name}'s port {h.port} of {h.switch:#x} is not tunnelled by "
                           f"its step: the new network could not reach it before it moves")
        if h.onto_port == up[h.switch][0]:
            raise VnmError(f"host {h.name} would move onto port {h.onto_port} of {h.onto:#x}, "
                           f"its uplink to the tunnel switch")
    others = sorted(tunnelled - {(h.switch, h.port) for h in hosts})
    if others:  # finalize could never retire a switch whose port stays on the old network
        raise VnmError("only hosts' ports may be tunnelled (they move); not "
                       + ", ".join(f"port {p} of {s:#x}" for s, p in others))
    return Layout(pairs, t0, patch, uplinks, steps, hosts)


_LAYOUT = ("pairs", "tunnel_switch", "patch", "uplinks", "steps", "hosts")


def pairs_from(value: Any) -> Tuple[Tuple[int, int], ...]:
    if not isinstance(value, dict) or not value:
        raise VnmError(f"pairs must map each old switch to its new one, not {value!r}")
    pairs = tuple(sorted((number(o, "an old switch"), number(n, f"the new switch of {o}"))
                         for o, n in value.items()))
    olds, news = [o for o, _ in pairs], [n for _, n in pairs]
    _once(olds, "pairs names old switch {} twice")
    if len(set(news)) != len(news):
        raise VnmError(f"two old switches have the same new one: {_show(pairs)}")
    both = sorted(set(olds) & set(news))
    if both:
        raise VnmError(f"{', '.join(hex(d) for d in both)} is in both networks")
    return pairs


def _port_pairs(value: Any, old: Mapping[int, int], what: str, port: str
                ) -> Tuple[Tuple[int, int, int], ...]:
    """{old switch: [a port for it, the same for its counterpart]} for every pair."""
    if not isinstance(value, dict):
        raise VnmError(f"{what} must map each old switch to two ports, not {value!r}")
    out = []
    for k, v in value.items():
        o = number(k, f"a switch in {what}")
        if o not in old:
            raise VnmError(f"{what} names {o:#x}, which is no old switch")
        if not isinstance(v, list) or len(v) != 2:
            raise VnmError(f"{what}[{k}] must be [{port} {o:#x}, {port} {old[o]:#x}], not {v!r}")
        out.append((o, _port(v[0], f"{what}[{k}]"), _port(v[1], f"{what}[{k}]")))
    _once([o for o, _, _ in out], what + " names {} twice")
    lacking = sorted(set(old) - {o for o, _, _ in out})
    if lacking:
        raise VnmError(f"{what} must cover every pair: it lacks "
                       f"{', '.join(hex(o) for o in lacking)}")
    return tuple(sorted(out))


def _hosts(value: Any, old: Mapping[int, int]) -> Tuple[Host, ...]:
    if not isinstance(value, dict) or not value:
        raise VnmError(f"hosts must name at least one host to move, not {value!r}")
    out = []
    for name, v in sorted(value.items()):
        if not isinstance(v, dict) or set(v) != {"switch", "port", "onto", "onto_port"}:
            raise VnmError(f"host {name}: give switch, port, onto and onto_port, not {v!r}")
        h = Host(str(name), number(v["switch"], f"{name}'s switch"),
                 _port(v["port"], f"{name}'s port"), number(v["onto"], f"{name}'s new switch"),
                 _port(v["onto_port"], f"{name}'s new port"))
        if old.get(h.switch) != h.onto:
            raise VnmError(f"host {name} moves from {h.switch:#x} to {h.onto:#x}, "
                           f"which is not a pair")
        out.append(h)
    _once([f"{h.switch:#x}:{h.port}" for h in out], "two hosts are on port {}")
    _once([f"{h.onto:#x}:{h.onto_port}" for h in out], "two hosts would move onto port {}")
    return tuple(out)


def _relays(uplinks: Tuple[Tuple[int, int, int], ...]) -> Dict[int, List[int]]:
    """Old switch -> [its counterpart's uplink, its own]: how LIME names a tunnel (and a relay)
    from the new switch to the old one."""
    return {o: [new, old] for o, old, new in uplinks}


def _port(value: Any, what: str) -> int:
    p = number(value, what)
    if not is_physical(p):
        raise VnmError(f"{what} {value!r} is not a port of a switch (1 to 0xffffff00)")
    return p


def _once(items: List[Any], error: str) -> None:
    seen: set = set()
    for x in items:
        if x in seen:
            raise VnmError(error.format(hex(x) if isinstance(x, int) else x))
        seen.add(x)


def _show(pairs: Any) -> str:
    return ", ".join(f"{o:#x}->{n:#x}" for o, n in pairs) or "none"


@dataclass(frozen=True)
class Step:
    """Something for the adapter to do. kind: "lime" (body: a LIME request), "patch" (body:
    {"switch": the tunnel switch, "rules": its rules to add}), "unpatch" (body: {"switch",
    "cookie"}: remove them). `undo`: what puts it back if it,
    or a later step of the same command, fails (None: nothing to, or LIME undoes it itself).
    `final`: once it succeeded the command has happened (see the module's docstring)."""

    kind: str
    body: Any
    undo: Optional["Step"] = None
    final: bool = False


class StepFailed(Exception):
    """A step the adapter could not carry out (LIME refused, the tunnel switch said no...)."""


@dataclass
class Outcome:
    """How a command's steps went: `happened` says whether to commit; `errors`, what failed
    (the failing step first, then any undo that failed too); `kept`, the steps that succeeded,
    had no undo and stay done although the command did not happen."""

    happened: bool
    errors: List[str]
    kept: List[str] = field(default_factory=list)


def carry_out(steps: List[Step], do: Callable[[Step], None]) -> Outcome:
    """Run the steps in order with `do` (which raises StepFailed), undoing on failure as the
    module's docstring says. Undos are attempted all, newest first, even if one fails."""
    done: List[Step] = []
    final = False
    for step in steps:
        try:
            do(step)
        except StepFailed as e:
            errors = [f"{step.kind} failed: {e}"]
            if final:
                return Outcome(True, errors)
            kept = [_name(s) for s in done if s.undo is None]
            for earlier in reversed(done + [step]):
                if earlier.undo is None:
                    continue
                try:
                    do(earlier.undo)
                except StepFailed as e2:
                    errors.append(f"undoing {earlier.kind} failed too: {e2}")
            return Outcome(False, errors, kept)
        done.append(step)
        final = final or step.final
    return Outcome(True, [])


def lime_op(step: Step) -> Optional[str]:
    """The LIME operation a step asks for, if it is one."""
    return step.body.get("op") if step.kind == "lime" else None


def _name(step: Step) -> str:
    return lime_op(step) or step.kind


def unpatch_body(layout: Layout) -> Dict[str, int]:
    return {"switch": layout.tunnel_switch, "cookie": PATCH_COOKIE}


def patch_rules(layout: Layout) -> Tuple[Rule, ...]:
    """The tunnel switch's patch: tagged frames from one end of a pair go out at the other.
    Anything untagged matches nothing (and is dropped by the table-miss of a secure bridge)."""
    tagged = (VLAN_PRESENT, VLAN_PRESENT)
    rules = []
    for _, a, b in layout.patch:
        for src, dst in ((a, b), (b, a)):
            rules.append(Rule(PATCH_PRIORITY, match_of(in_port=src, vlan_vid=tagged),
                              (Output(dst),), cookie=PATCH_COOKIE))
    return tuple(rules)


class Vnm:
    """One migration at a time, of one pair of networks."""

    def __init__(self) -> None:
        self.state = IDLE
        self.algorithm: Optional[str] = None
        self.layout: Optional[Layout] = None
        self.moved: Tuple[str, ...] = ()   # host names, in the order they moved

    # -- planning (no state change) ---------------------------------------------------------------
    def plan(self, command: str, body: Any) -> List[Step]:
        """The steps `command` takes now; VnmError if it may not (nothing changed either way)."""
        body = check(command, body)
        if command == "status":
            return []
        if command == "prepare":
            return self._plan_prepare(body)
        if self.state != PREPARED:
            raise VnmError("nothing is prepared: prepare first" if self.state == IDLE
                           else "the migration is finalized: nothing left to do")
        assert self.layout is not None and self.algorithm is not None
        named = body.get("algorithm")
        if named is not None and named != self.algorithm:
            raise VnmError(f"the migration in progress uses {self.algorithm}: the algorithm "
                           f"cannot change mid-migration")
        if command == "migrate":
            return self._plan_migrate(body["host"])
        return self._plan_finalize()

    def _plan_prepare(self, body: Dict[str, Any]) -> List[Step]:
        if self.state == PREPARED:
            raise VnmError(f"already prepared ({self.algorithm}): finalize it first")
        algorithm, layout = body["algorithm"], layout_from(body["layout"])
        steps = [dict(s) for s in layout.steps]
        if algorithm == "asap":  # the new network relays to the old one until finalize
            up = _relays(layout.uplinks)
            for s in steps:
                s["relay"] = up[s["switch"]]
        unpatch = Step("unpatch", unpatch_body(layout))
        return [Step("patch", {"switch": layout.tunnel_switch, "rules": patch_rules(layout)},
                     undo=unpatch),
                Step("lime", {"op": "ensemble", "steps": steps})]

    def _plan_migrate(self, name: str) -> List[Step]:
        assert self.layout is not None
        h = self.layout.host(name)
        if name in self.moved:
            raise VnmError(f"{name} has already moved to {h.onto:#x}")
        return [Step("lime", {"op": "move_host", "switch": h.switch, "port": h.port,
                              "onto": h.onto, "onto_port": h.onto_port})]

    def _plan_finalize(self) -> List[Step]:
        assert self.layout is not None
        waiting = [h.name for h in self.layout.hosts if h.name not in self.moved]
        if waiting:
            raise VnmError(f"hosts not moved yet: {', '.join(waiting)}")
        retire = [{"switch": o, "instance": o} for o, _ in self.layout.pairs]
        steps = []
        if self.algorithm == "asap":
            steps.append(Step("lime", {"op": "promote_ensemble", "steps": [
                {"switch": o, "instance": n} for o, n in self.layout.pairs]}))
        return steps + [Step("lime", {"op": "retire_ensemble", "steps": retire}, final=True),
                        Step("unpatch", unpatch_body(self.layout))]

    # -- after every step of a command succeeded --------------------------------------------------
    def commit(self, command: str, body: Any) -> None:
        """The command happened (see the module's docstring): the state follows. Planned again
        first, so that a commit the state does not allow is refused (VnmError), not recorded."""
        self.plan(command, body)
        body = check(command, body)
        if command == "prepare":
            self.state, self.algorithm = PREPARED, body["algorithm"]
            self.layout, self.moved = layout_from(body["layout"]), ()
        elif command == "migrate":
            self.moved += (body["host"],)
        elif command == "finalize":
            self.state = FINALIZED

    # -- status and persistence -------------------------------------------------------------------
    def to_doc(self) -> Dict[str, Any]:
        doc: Dict[str, Any] = {"state": self.state, "algorithm": self.algorithm,
                               "moved": list(self.moved)}
        if self.layout is not None:
            doc["layout"] = self.layout.to_doc()
            doc["hosts"] = {h.name: {"on": hex(h.onto if h.name in self.moved else h.switch),
                                     "moved": h.name in self.moved} for h in self.layout.hosts}
        return doc

    @classmethod
    def from_doc(cls, doc: Any) -> "Vnm":
        """The state saved by to_doc (Redis); VnmError for anything to_doc would not write."""
        if not isinstance(doc, dict):
            raise VnmError(f"a saved VNM state must be a JSON object, not {doc!r}")
        out = cls()
        state, algorithm, moved = doc.get("state"), doc.get("algorithm"), doc.get("moved", [])
        if state not in (IDLE, PREPARED, FINALIZED):
            raise VnmError(f"a saved VNM state {state!r} is none of idle, prepared, finalized")
        if state == IDLE:
            if algorithm is not None or moved or "layout" in doc:
                raise VnmError("a saved idle VNM state has a migration's algorithm, hosts "
                               "or layout")
            return out
        if algorithm not in ALGORITHMS or "layout" not in doc:
            raise VnmError(f"a saved VNM state {state!r} lacks its layout or a known algorithm")
        if not isinstance(moved, list) or not all(isinstance(n, str) for n in moved):
            raise VnmError(f"a saved VNM state's moved hosts must be a list of names, "
                           f"not {moved!r}")
        out.layout = layout_from(doc["layout"])
        for name in moved:
            out.layout.host(name)
        _once(moved, "a saved VNM state has host {} moved twice")
        if state == FINALIZED and len(moved) != len(out.layout.hosts):
            raise VnmError("a saved finalized VNM state has hosts that never moved")
        out.state, out.algorithm, out.moved = state, algorithm, tuple(moved)
        return out


_BODIES: Dict[str, Dict[str, bool]] = {  # command -> field -> required
    "prepare": {"algorithm": True, "layout": True},
    "migrate": {"host": True, "algorithm": False},
    "finalize": {"algorithm": False},
    "status": {},
}
COMMANDS = tuple(_BODIES)


def check(command: str, body: Any) -> Dict[str, Any]:
    """The command's body, checked (the same for the command line and HTTP)."""
    if command not in _BODIES:
        raise VnmError(f"unknown VNM command {command!r}: use {', '.join(COMMANDS)}")
    body = {} if body is None else body
    if not isinstance(body, dict):
        raise VnmError(f"{command}: the body must be a JSON object, not {body!r}")
    spec = _BODIES[command]
    unknown = sorted(set(body) - set(spec))
    if unknown:
        raise VnmError(f"{command}: unknown field(s) {', '.join(unknown)}"
                       + (f": use {', '.join(sorted(spec))}" if spec else ""))
    missing = [f for f, required in spec.items() if required and f not in body]
    if missing:
        raise VnmError(f"{command}: field(s) {', '.join(missing)} required")
    if "algorithm" in body and body["algorithm"] not in ALGORITHMS:
        raise VnmError(f"unknown algorithm {body['algorithm']!r}: use {' or '.join(ALGORITHMS)}")
    if "host" in body and not isinstance(body["host"], str):
        raise VnmError(f"{command}: host must be a name, not {body['host']!r}")
    return body
