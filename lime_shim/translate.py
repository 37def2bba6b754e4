"""An app's rule (in logical ports) as the physical rules one instance needs. No I/O.

Per instance, for a rule R of logical switch L:

| R's part                      | on instance I                                                  |
|-------------------------------|----------------------------------------------------------------|
| match in_port = lp            | one copy per physical input of lp on I (none: R is not needed) |
| no in_port, and an output to  | one copy per physical input, when some input is not its port's |
|   a port (or FLOOD) that has  | output place (else the packet could go back where it came)     |
|   such an input; or tunnels   | and whenever tunnels end on I (app rules never see their ports)|
|   end on I                    |                                                                |
| output lp                     | Local(p): output p; Tunnel: push VLAN vid, output via, pop;    |
|                               | no place on I: dropped (reported)                              |
| output FLOOD / ALL            | every logical port but the packet's in_port, each as above     |
| output lp = the in_port       | nothing (OpenFlow drops it; IN_PORT is how to ask for that)    |
| output IN_PORT, CONTROLLER,   | unchanged                                                      |
|   LOCAL, NORMAL, TABLE        |                                                                |
| cookie                        | the shim's cookie for R: its serial, and the form of this copy |
|                               | (phase 1, to-controller-only) for the packet-ins it raises     |
| phase 1 of a two-phase update | R's match, every packet to the shim and nowhere else (no goto, |
|                               | write-actions or other instructions; the shim forwards it by R |
|                               | and the tables R's goto leads to: `pipeline_actions`)          |
| timeouts, one instance        | kept, and SEND_FLOW_REM set: the shim's table drops R when the |
|                               | switch does (the app gets FLOW_REMOVED only if it asked)       |
| while L is migrating:         |                                                                |
|   idle / hard timeout         | 0 (the shim times R out on every instance; see timeouts.py)    |
|   SEND_FLOW_REM               | cleared (the shim sends the FLOW_REMOVED the app asked for)    |
|   to-controller + forward     | to-controller only, nothing else (as phase 1; the shim         |
|                               | forwards; see LIME sec. 4.1)                                   |

Tunnel ends: for every tunnel another instance points at I, I gets a rule (priority 65535) that
pops the tag and outputs to the logical port's local port, and a drop rule for anything else on
the tunnel port; app rules on I all match an input port, so tunnelled packets never meet them.

Relays (Tunnel ASAP): an instance that does not hold the rules gets none of them; it sends what
arrives on each input, tagged 2048 + its logical port, out of its relay port (`relay_rules`).
Its home ends that: pop, set in_port to its own input of that logical port, look the packet up
again from table 0 (`tunnel_ends`), so the apps' rules there handle it as if it had come in
there, and its packet-ins name that port.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, FrozenSet, List, Optional, Tuple

from lime_shim.mapping import Instance, LogicalSwitch, Local, Tunnel, relay_vid
from lime_shim.model import (EVERY_PORT, OFPFF_SEND_FLOW_REM, OFPP_CONTROLLER, PASS_THROUGH,
                             VLAN_PRESENT, Action, Actions, Opaque, Output, PopVlan, PushVlan,
                             Resubmit, Rule, SetInPort, SetVlan, match_get, match_set)
from lime_shim.table import FlowTable

#: Cookies of the shim's own physical rules: the top 16 bits mark them; bit 47 marks a phase-1
#: copy (every packet to the shim, which forwards it by the new rule), bit 46 a copy whose
#: to-controller-and-forward the shim does (the forward is the shim's); the rest is the serial.
#: The form travels in each packet-in's cookie, so a packet-in raised just before a change of
#: form is still handled by the form that raised it.
COOKIE_MARK = 0x11AE << 48
COOKIE_MASK = 0xFFFF << 48
PHASE_ONE = 1 << 47
CTL_ONLY = 1 << 46
SERIAL_MASK = CTL_ONLY - 1
FORM_MASK = PHASE_ONE | CTL_ONLY
TUNNEL_COOKIE = COOKIE_MARK | SERIAL_MASK
TUNNEL_PRIORITY = 65535
TUNNEL_GUARD_PRIORITY = 65534


def shim_cookie(serial: int, form: int = 0) -> int:
    if not 0 < serial < SERIAL_MASK:
        raise ValueError(f"rule serial {serial} out of range")
    return COOKIE_MARK | (form & FORM_MASK) | serial


def serial_of(cookie: int) -> Optional[int]:
    """The rule serial a physical cookie carries, or None if not one of the shim's app rules."""
    if cookie & COOKIE_MASK != COOKIE_MARK or cookie & SERIAL_MASK == SERIAL_MASK:
        return None
    return cookie & SERIAL_MASK


def form_of(cookie: int) -> int:
    return cookie & FORM_MASK if serial_of(cookie) is not None else 0


def output_to(inst: Instance, lport: int) -> Optional[Actions]:
    place = inst.out.get(lport)
    if isinstance(place, Local):
        return (Output(place.port),)
    if isinstance(place, Tunnel):
        return (PushVlan(), SetVlan(place.vid | VLAN_PRESENT), Output(place.via), PopVlan())
    return None


def translate_actions(ls: LogicalSwitch, inst: Instance, actions: Actions,
                      in_lport: Optional[int]) -> Tuple[Actions, Tuple[int, ...]]:
    """Physical actions for `inst`, and the logical ports an output could not reach from it."""
    out: List[Action] = []
    dropped: List[int] = []
    for a in actions:
        if not isinstance(a, Output) or a.port in PASS_THROUGH:
            out.append(a)
            continue
        if a.port in EVERY_PORT:
            targets = [p for p in ls.ports if p != in_lport]
        elif a.port == in_lport:
            continue  # OpenFlow drops an output to the ingress port (IN_PORT is how to ask for it)
        else:
            targets = [a.port]
        for lport in targets:
            acts = output_to(inst, lport)
            if acts is None:
                dropped.append(lport)
            else:
                out.extend(acts)
    return tuple(out), tuple(dropped)


def controller_only(actions: Actions) -> Actions:
    """A rule that both sends to the controller and forwards: keep only the controller part."""
    ctl = [a for a in actions if isinstance(a, Output) and a.port == OFPP_CONTROLLER]
    if not ctl or len(ctl) == sum(isinstance(a, Output) for a in actions):
        return actions
    return (Output(OFPP_CONTROLLER),)


def shim_only(rule: Rule, actions: Actions) -> Rule:
    """A copy whose apply-actions are `actions` (to the shim) and that goes no further down the
    switch's pipeline: a goto would let the later tables forward the packet the shim forwards
    too (delivered twice). Write-actions and meters (`extra`) stay: the shim forwards by
    apply-actions only, so on the switch is the only place they still act."""
    return replace(rule, actions=tuple(actions), goto=None)


def needs_split(ls: LogicalSwitch, inst: Instance, rule: Rule) -> bool:
    """Must an in_port-less rule be installed per input port on this instance? Yes when a packet
    could come in on a port that is not its logical port's output place and the rule sends to
    that logical port (or floods): OVS would not know it is sending the packet back where it
    came from, so each copy has to leave that port out itself. And yes whenever a tunnel ends
    here: a rule without in_port would also match tunnelled packets, at any priority the app
    chose (tunnel ends cannot outrank an app rule at 65535)."""
    if tunnel_ports(ls, inst):
        return True
    floods = any(isinstance(a, Output) and a.port in EVERY_PORT for a in rule.actions)
    named = set(rule.outputs())
    return any(inst.out.get(lp) != Local(p) and (floods or lp in named)
               for p, lp in inst.ins.items())


def tunnel_ports(ls: LogicalSwitch, inst: Instance) -> Tuple[int, ...]:
    """This instance's ports where tunnels (and relays) from other instances arrive."""
    ports = {pl.peer_port for o in ls.instances.values() if o.dpid != inst.dpid
             for pl in o.out.values() if isinstance(pl, Tunnel) and pl.peer == inst.dpid}
    ports |= {o.relay.peer_port for o in ls.instances.values()
              if o.relay is not None and o.relay.peer == inst.dpid}
    return tuple(sorted(ports))


def identical(ls: LogicalSwitch) -> Optional[FrozenSet[int]]:
    """The switch's ports if it has one instance, itself, with every port where it was: then a
    rule needs only the shim's cookie (and SEND_FLOW_REM with timeouts) unless it floods (hidden
    ports) or names a port that is not the switch's. None otherwise."""
    if ls.migrating or ls.dpid not in ls.instances:
        return None
    inst = ls.instances[ls.dpid]
    if (all(inst.out.get(p) == Local(p) for p in ls.ports)
            and all(p == lp for p, lp in inst.ins.items()) and len(inst.out) == len(ls.ports)):
        return frozenset(ls.ports)
    return None


def as_is(rule: Rule, ports: FrozenSet[int]) -> bool:
    """Is the rule its own translation on an `identical` switch with these ports?"""
    in_lport = match_get(rule.match, "in_port")
    if in_lport is not None and in_lport not in ports:
        return False
    for a in rule.actions:
        if isinstance(a, Output) and a.port not in PASS_THROUGH and (
                a.port not in ports or a.port == in_lport):
            return False
    return True


def translate(ls: LogicalSwitch, inst: Instance, rule: Rule, serial: int, phase_one: bool = False,
              same: Optional[FrozenSet[int]] = None) -> Tuple[Tuple[Rule, ...], Tuple[int, ...]]:
    """The physical rules `inst` needs for `rule`, and the logical outputs it cannot reach.
    `phase_one`: the first half of a two-phase update (the match, every packet to the shim).
    `same`: `identical(ls)`, which the caller caches: a short cut to the same result for most
    rules (the packet-in path's cost, see experiments/lime_overhead.py)."""
    if not inst.holds_rules:
        return (), ()  # a relay: its home has the rules (relay_rules, tunnel_ends)
    if same is not None and not phase_one and as_is(rule, same):
        flags = rule.flags | OFPFF_SEND_FLOW_REM if rule.idle_timeout or rule.hard_timeout \
            else rule.flags
        return (replace(rule, cookie=shim_cookie(serial), flags=flags),), ()
    form = 0
    base = rule
    if phase_one:
        base, form = shim_only(rule, (Output(OFPP_CONTROLLER),)), PHASE_ONE
    if not ls.migrating and (rule.idle_timeout or rule.hard_timeout):
        base = replace(base, flags=base.flags | OFPFF_SEND_FLOW_REM)  # the shim's table follows
    if ls.migrating:
        acts = controller_only(base.actions)
        if acts != base.actions:
            form |= CTL_ONLY
            base = shim_only(base, acts)
        base = replace(base, idle_timeout=0, hard_timeout=0,
                       flags=base.flags & ~OFPFF_SEND_FLOW_REM)
    base = replace(base, cookie=shim_cookie(serial, form))
    in_lport = match_get(rule.match, "in_port")
    if in_lport is not None:
        inputs = [(p, in_lport) for p in inst.inputs_of(in_lport)]
    elif needs_split(ls, inst, rule):
        inputs = sorted(inst.ins.items())
    else:
        acts, dropped = translate_actions(ls, inst, base.actions, None)
        return (base.with_actions(acts),), dropped
    rules: List[Rule] = []
    dropped_all: List[int] = []
    for pport, lport in inputs:
        acts, dropped = translate_actions(ls, inst, base.actions, lport)
        rules.append(replace(base, match=match_set(rule.match, "in_port", pport), actions=acts))
        dropped_all += dropped
    return tuple(rules), tuple(sorted(set(dropped_all)))


def tunnel_ends(ls: LogicalSwitch, inst: Instance) -> Tuple[Rule, ...]:
    """The rules that end, on `inst`, the tunnels other instances send into it."""
    rules: List[Rule] = []
    guarded = set()
    for other in ls.instances.values():
        if other.dpid == inst.dpid:
            continue
        for lport, place in sorted(other.out.items()):
            if not isinstance(place, Tunnel) or place.peer != inst.dpid:
                continue
            local = inst.local(lport)
            if local is None:
                continue  # the map forbids this (Mapping.check_instance)
            m = (("in_port", place.peer_port), ("vlan_vid", place.vid | VLAN_PRESENT))
            rules.append(Rule(TUNNEL_PRIORITY, m, (PopVlan(), Output(local)),
                              cookie=TUNNEL_COOKIE))
            guarded.add(place.peer_port)
        r = other.relay
        if r is None or r.peer != inst.dpid:
            continue
        for lport in sorted(set(other.ins.values())):  # taken in as if on its own input
            m = (("in_port", r.peer_port), ("vlan_vid", relay_vid(lport) | VLAN_PRESENT))
            rules.append(Rule(TUNNEL_PRIORITY, m, (PopVlan(), SetInPort(inst.inputs_of(lport)[0]),
                                                   Resubmit(0)), cookie=TUNNEL_COOKIE))
        guarded.add(r.peer_port)
    for port in sorted(guarded):
        rules.append(Rule(TUNNEL_GUARD_PRIORITY, (("in_port", port),), (), cookie=TUNNEL_COOKIE))
    return tuple(rules)


def relay_rules(inst: Instance) -> Tuple[Rule, ...]:
    """A relay's rules: whatever arrives on an input goes to its home, tagged with its logical
    port. At 65535, so they also hold while a relay is being promoted, above every app rule but
    one at 65535 itself (which then ties, as with tunnel ends: apps should stay below)."""
    r = inst.relay
    if r is None:
        return ()
    return tuple(Rule(TUNNEL_PRIORITY, (("in_port", pport),),
                      (PushVlan(), SetVlan(relay_vid(lport) | VLAN_PRESENT), Output(r.via)),
                      cookie=TUNNEL_COOKIE)
                 for pport, lport in sorted(inst.ins.items()))


def packet_out_plan(ls: LogicalSwitch, in_lport: Optional[int], actions: Actions,
                    prefer: Optional[int] = None, came_in: Optional[int] = None
                    ) -> Dict[int, Tuple[int, Actions]]:
    """An app's PACKET_OUT (or a packet the shim forwards) as one PACKET_OUT per instance that
    has some of its output ports: {instance: (physical in_port, actions)}. Each logical port is
    sent to from one instance only (`prefer` if the port is local there, else where it is local),
    so a flood reaches every port once; a port the packet came in on is left out, as OpenFlow
    does; non-output actions are kept, in order, in every part. `came_in`: the physical port on
    `prefer` a packet the shim forwards arrived on."""
    def where(lport: int) -> Optional[int]:
        if prefer is not None and ls.instances[prefer].local(lport) is not None:
            return prefer
        home = ls.home_of(lport)
        if home is not None:
            return home
        return next((d for d, i in sorted(ls.instances.items()) if lport in i.out), None)

    def entry_of(pdpid: int) -> int:
        if came_in is not None and pdpid == prefer:
            return came_in  # the physical port the packet really came in on
        inputs = ls.instances[pdpid].inputs_of(in_lport) if in_lport is not None else ()
        return inputs[0] if inputs else OFPP_CONTROLLER

    entry_instance = prefer if prefer is not None else (
        where(in_lport) if in_lport is not None else None)
    if entry_instance is None:
        entry_instance = min(d for d, i in ls.instances.items() if i.holds_rules)
    parts: Dict[int, List[Action]] = {d: [] for d in ls.instances}
    used: Dict[int, bool] = {d: False for d in ls.instances}
    for a in actions:
        if not isinstance(a, Output):
            for acts in parts.values():
                acts.append(a)
            continue
        if a.port == OFPP_CONTROLLER:
            continue
        if a.port in PASS_THROUGH:
            parts[entry_instance].append(a)
            used[entry_instance] = True
            continue
        targets = ([p for p in ls.ports if p != in_lport] if a.port in EVERY_PORT
                   else [] if a.port == in_lport else [a.port])
        for lport in targets:
            d = where(lport)
            acts = output_to(ls.instances[d], lport) if d is not None else None
            if acts is not None and d is not None:
                parts[d].extend(acts)
                used[d] = True
    return {d: (entry_of(d), tuple(parts[d])) for d in sorted(parts) if used[d]}


def sync(old: Dict[Any, Rule], rules: Tuple[Rule, ...]) -> Tuple[List[Rule], List[Rule]]:
    """From the copies a bridge holds (key -> rule) to `rules`: what to ADD (new or changed; an
    ADD replaces the same key in place) and what to delete (keys no longer produced)."""
    new = {r.key: r for r in rules}
    adds = [r for k, r in new.items() if old.get(k) != r]
    deletes = [r for k, r in old.items() if k not in new]
    return adds, deletes


def packet_in_plan(form: int, rule_actions: Optional[Actions]) -> Tuple[Optional[Actions], bool]:
    """What the shim does with a packet-in a copy of a rule raised: (actions it forwards the
    packet by, or None; whether the apps see it). `rule_actions`: the actions the packet meets
    from the app's rule on, as it is now: its own, or with a goto `pipeline_actions` (None: gone,
    or a table miss). A phase-1 copy's packet is forwarded by the rule as it is now
    (it may arrive after the second half landed: still the new rule), and reported only if that
    rule (or a later table on the packet's way) sends to the controller; a to-controller-only
    copy's is forwarded and reported."""
    if form & PHASE_ONE:
        if rule_actions is None:
            return None, False  # the caller looks the packet up in the current table
        reported = any(isinstance(a, Output) and a.port == OFPP_CONTROLLER for a in rule_actions)
        return without_controller(rule_actions), reported
    if form & CTL_ONLY and rule_actions is not None:
        return without_controller(rule_actions), True
    return None, True


def without_controller(actions: Actions) -> Actions:
    return tuple(a for a in actions if not (isinstance(a, Output) and a.port == OFPP_CONTROLLER))


def pipeline_actions(table: FlowTable, fields: Dict[str, Any], rule: Optional[Rule] = None,
                     start: int = 0) -> Actions:
    """The apply-actions a packet meets in the apps' logical table, in order: `rule`'s (the
    app's rule whose shim-only copy raised the packet-in) and those of the entries it meets
    from `rule.goto` on; with no rule, those it meets from table `start` (where the rule that
    raised it was: the tables before it have acted on the switch already). `fields`: its header fields
    with the logical in_port. Output:CONTROLLER is kept (packet_in_plan decides on it).
    A set-field (SetVlan, or the platform's, carried as Opaque with `key` and `value` as Ryu's
    and os-ken's OFPActionSetField are) changes the fields the next table looks at, as on a
    switch. Not followed: write-actions and other instructions (`extra`, platform objects the
    shim does not read), and the VLAN push/pop or other rewrites an app's actions may carry."""
    acts: List[Action] = []
    fields = dict(fields)
    table_id: Optional[int] = start
    if rule is not None:
        acts += rule.actions
        _set_fields(fields, rule.actions)
        table_id = rule.goto if rule.goto is not None and rule.goto > rule.table_id else None
    while table_id is not None:  # a goto only goes forward: at most 255 tables
        e = table.best(fields, table_id)
        if e is None:
            break
        acts += e.rule.actions
        _set_fields(fields, e.rule.actions)
        goto = e.rule.goto
        table_id = goto if goto is not None and goto > table_id else None
    return tuple(acts)


def _set_fields(fields: Dict[str, Any], actions: Actions) -> None:
    """The header fields after `actions`' set-fields (in place), for the next table's lookup."""
    for a in actions:
        if isinstance(a, SetVlan):
            fields["vlan_vid"] = a.vid
        elif isinstance(a, Opaque):
            key, value = getattr(a.action, "key", None), getattr(a.action, "value", None)
            if isinstance(key, str) and isinstance(value, (int, str)):
                fields[key] = value
