"""LIME rule translation: a packet meets the same logical rule on whichever instance it enters.

The property test wires instances the way the testbeds do (identity ports on the original, new
port numbers on the clone, tunnels both ways, a neighbour with two links for one logical port),
translates one logical rule onto every instance, and pushes a packet through the physical rules
with a small simulator of OVS's table and actions. Whatever the entry point, the logical ports
that get the packet are exactly those the logical rule names, each exactly once.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lime_shim import translate as tr
from lime_shim.mapping import Instance, Local, LogicalSwitch, Mapping, MappingError, Tunnel
from lime_shim.model import (OFPFF_SEND_FLOW_REM, OFPP_CONTROLLER, OFPP_FLOOD, OFPP_IN_PORT,
                             PASS_THROUGH, VLAN_PRESENT, Output, PopVlan, PushVlan, Rule, SetVlan,
                             match_get, match_of)

A, B = 1, 2
A_VIA, B_VIA = 50, 60  # A's port toward B and B's port toward A


def build(n: int, on_b: List[bool], moved: List[bool], twin: List[bool], twin_out: List[bool]
          ) -> LogicalSwitch:
    """Logical ports 1..n on A (identity); B has port lp as 10+lp where on_b; a moved port is
    reached from A through the tunnel; a twin port has a second physical input 30+lp on A (a
    neighbour linked to both), maybe used as its output."""
    ports = tuple(range(1, n + 1))
    m = Mapping()
    ls = m.add_switch(A, ports)
    a = ls.instances[A]
    b = Instance(B)
    for i, lp in enumerate(ports):
        if twin[i]:
            a.ins[30 + lp] = lp
            if twin_out[i]:
                a.out[lp] = Local(30 + lp)
        if on_b[i]:
            b.out[lp] = Local(10 + lp)
            b.ins[10 + lp] = lp
        else:
            b.out[lp] = Tunnel(B_VIA, 100 + lp, A, A_VIA)
    m.add_instance(A, b)
    for i, lp in enumerate(ports):
        if on_b[i] and moved[i]:
            a.out[lp] = Tunnel(A_VIA, lp, B, B_VIA)
    m.set_instance(A, a)
    return ls


def wiring(ls: LogicalSwitch) -> Dict[Tuple[int, int], Tuple]:
    wire: Dict[Tuple[int, int], Tuple] = {(A, A_VIA): ("peer", B, B_VIA),
                                          (B, B_VIA): ("peer", A, A_VIA)}
    for inst in ls.instances.values():
        for pport, lport in inst.ins.items():
            wire[(inst.dpid, pport)] = ("lport", lport)
        for lport, place in inst.out.items():
            if isinstance(place, Local):
                wire[(inst.dpid, place.port)] = ("lport", lport)
    return wire


def matches(rule: Rule, in_port: int, vid: Optional[int]) -> bool:
    for k, v in rule.match:
        if k == "in_port" and v != in_port:
            return False
        if k == "vlan_vid" and v != vid:
            return False
    return True


def run(tables: Dict[int, List[Rule]], wire, dpid: int, in_port: int, vid: Optional[int] = None,
        hops: int = 0) -> List:
    """Where a packet entering `dpid` on `in_port` ends up: logical ports and reserved ports."""
    assert hops < 4, "the packet loops between instances"
    hits = [r for r in tables[dpid] if matches(r, in_port, vid)]
    if not hits:
        return []
    top = max(r.priority for r in hits)
    best = [r for r in hits if r.priority == top]
    assert len(best) == 1, f"ambiguous physical rules {best}"
    tags: List[int] = [] if vid is None else [vid]
    got: List = []
    for act in best[0].actions:
        if isinstance(act, PushVlan):
            tags.append(VLAN_PRESENT)
        elif isinstance(act, SetVlan):
            tags[-1] = act.vid
        elif isinstance(act, PopVlan):
            tags.pop()
        elif isinstance(act, Output):
            if act.port in PASS_THROUGH:
                got.append(("reserved", act.port))
            elif act.port == in_port:
                continue  # OVS drops an output to the ingress port
            else:
                kind, *rest = wire[(dpid, act.port)]
                if kind == "lport":
                    assert not tags, "a tagged packet left the logical switch"
                    got.append(("lport", rest[0]))
                else:
                    got += run(tables, wire, rest[0], rest[1], tags[-1] if tags else None,
                               hops + 1)
    return got


def tables_for(ls: LogicalSwitch, rule: Rule) -> Dict[int, List[Rule]]:
    out = {}
    for inst in ls.instances.values():
        rules, dropped = tr.translate(ls, inst, rule, 7)
        assert dropped == ()
        ends = tr.tunnel_ends(ls, inst)
        tunnel_in = {r.match[0][1] for r in ends}
        assert all(match_get(r.match, "in_port") not in tunnel_in for r in rules), \
            "an app rule that could see tunnelled packets"
        out[inst.dpid] = list(rules) + list(ends)
    return out


def expected(ls: LogicalSwitch, rule: Rule, entry: int) -> Counter:
    want = match_get(rule.match, "in_port")
    if want is not None and want != entry:
        return Counter()
    outs = rule.outputs()
    if ls.migrating and OFPP_CONTROLLER in outs:
        return Counter({("reserved", OFPP_CONTROLLER): 1})
    c: Counter = Counter()
    for p in outs:
        if p == OFPP_FLOOD:
            c.update(("lport", q) for q in ls.ports if q != entry)
        elif p in PASS_THROUGH:
            c[("reserved", p)] += 1
        elif p != entry:
            c[("lport", p)] += 1
    return c


@st.composite
def cases(draw):
    n = draw(st.integers(2, 5))
    flags = [draw(st.lists(st.booleans(), min_size=n, max_size=n)) for _ in range(4)]
    ls = build(n, *flags)
    outs = draw(st.lists(st.sampled_from(list(range(1, n + 1)) + [OFPP_FLOOD, OFPP_CONTROLLER]),
                         max_size=3, unique=True))
    in_port = draw(st.one_of(st.none(), st.integers(1, n)))
    fields = {"eth_dst": "00:00:00:00:00:02"}
    if in_port is not None:
        fields["in_port"] = in_port
    prio = draw(st.sampled_from([10, 65535]))  # an app rule as high as the tunnel ends
    rule = Rule(prio, match_of(**fields), tuple(Output(p) for p in outs))
    return ls, rule


@settings(max_examples=400, deadline=None)
@given(cases())
def test_every_entry_point_gives_the_logical_rules_outputs_once(case):
    ls, rule = case
    tables = tables_for(ls, rule)
    wire = wiring(ls)
    for inst in ls.instances.values():
        for pport, lport in inst.ins.items():
            got = Counter(run(tables, wire, inst.dpid, pport))
            assert got == expected(ls, rule, lport), (inst.dpid, pport, lport)


def test_a_single_instance_keeps_the_rule_as_it_is_but_for_the_cookie():
    m = Mapping()
    ls = m.add_switch(3, (1, 2))
    rule = Rule(10, match_of(in_port=1, eth_dst="aa"), (Output(2),), idle_timeout=30,
                flags=OFPFF_SEND_FLOW_REM, cookie=5)
    rules, dropped = tr.translate(ls, ls.instances[3], rule, 1)
    assert rules == (Rule(10, rule.match, (Output(2),), idle_timeout=30,
                          flags=OFPFF_SEND_FLOW_REM, cookie=tr.shim_cookie(1)),)
    assert dropped == ()
    timed = Rule(10, match_of(eth_dst="aa"), (Output(2),), hard_timeout=9)
    (phys,), _ = tr.translate(ls, ls.instances[3], timed, 4)
    assert phys.flags == OFPFF_SEND_FLOW_REM and phys.hard_timeout == 9
    flood = Rule(1, (), (Output(OFPP_FLOOD),))
    rules, _ = tr.translate(ls, ls.instances[3], flood, 2)
    assert [r.actions for r in rules] == [(Output(1), Output(2))]


def test_while_migrating_timeouts_and_flow_removed_are_the_shims_and_ctl_forward_is_ctl_only():
    ls = build(2, [True, True], [False, False], [False, False], [False, False])
    rule = Rule(10, match_of(in_port=1), (Output(2), Output(OFPP_CONTROLLER)), idle_timeout=5,
                hard_timeout=9, flags=OFPFF_SEND_FLOW_REM)
    for inst in ls.instances.values():
        (phys,), _ = tr.translate(ls, inst, rule, 3)
        assert (phys.idle_timeout, phys.hard_timeout, phys.flags) == (0, 0, 0)
        assert phys.actions == (Output(OFPP_CONTROLLER),)
        assert tr.serial_of(phys.cookie) == 3 and tr.form_of(phys.cookie) == tr.CTL_ONLY


def test_an_output_with_no_place_on_an_instance_is_reported():
    m = Mapping()
    ls = m.add_switch(3, (1, 2))
    m.add_instance(3, Instance(0x103, {1: Local(7)}, {7: 1}))
    rules, dropped = tr.translate(ls, ls.instances[0x103], Rule(1, (), (Output(2),)), 9)
    assert dropped == (2,) and rules[0].actions == ()


def test_pass_through_ports_are_kept():
    ls = build(2, [True, False], [False, False], [False, False], [False, False])
    rule = Rule(1, (), (Output(OFPP_IN_PORT),))
    for inst in ls.instances.values():
        rules, _ = tr.translate(ls, inst, rule, 1)
        assert all(r.actions == (Output(OFPP_IN_PORT),) for r in rules)


def test_tunnel_ends_pop_and_guard():
    ls = build(2, [True, False], [True, False], [False, False], [False, False])
    ends_b = tr.tunnel_ends(ls, ls.instances[B])
    assert Rule(tr.TUNNEL_PRIORITY, (("in_port", B_VIA), ("vlan_vid", 1 | VLAN_PRESENT)),
                (PopVlan(), Output(11)), cookie=tr.TUNNEL_COOKIE) in ends_b
    assert Rule(tr.TUNNEL_GUARD_PRIORITY, (("in_port", B_VIA),), (),
                cookie=tr.TUNNEL_COOKIE) in ends_b
    assert tr.serial_of(tr.TUNNEL_COOKIE) is None
    assert tr.serial_of(12) is None


def test_phase_one_sends_everything_to_the_shim_and_says_so_in_its_cookie():
    ls = build(2, [True, True], [False, False], [False, False], [False, False])
    rule = Rule(10, match_of(in_port=1), (SetVlan(5 | VLAN_PRESENT), Output(2)))
    (phys,), _ = tr.translate(ls, ls.instances[A], rule, 5, phase_one=True)
    assert phys.actions == (Output(OFPP_CONTROLLER),)
    assert tr.serial_of(phys.cookie) == 5 and tr.form_of(phys.cookie) == tr.PHASE_ONE


WRITE = ("write-actions",)  # a platform instruction the shim carries untouched (Rule.extra)


def test_a_first_half_of_a_rule_with_goto_sends_its_packets_to_the_shim_only():
    """Kept, the goto let the switch's later tables forward the packet the shim forwards too."""
    ls = build(2, [True, True], [False, False], [False, False], [False, False])
    rule = Rule(10, match_of(in_port=1), (Output(2),), goto=1, extra=WRITE)
    for inst in ls.instances.values():
        (phys,), _ = tr.translate(ls, inst, rule, 5, phase_one=True)
        assert phys.actions == (Output(OFPP_CONTROLLER),)
        assert (phys.goto, phys.extra) == (None, WRITE)
        assert tr.form_of(phys.cookie) == tr.PHASE_ONE


def test_a_ctl_only_copy_of_a_rule_with_goto_sends_its_packets_to_the_shim_only():
    ls = build(2, [True, True], [False, False], [False, False], [False, False])
    rule = Rule(10, match_of(in_port=1), (Output(OFPP_CONTROLLER), Output(2)), goto=1,
                extra=WRITE)
    for inst in ls.instances.values():
        (phys,), _ = tr.translate(ls, inst, rule, 5)
        assert phys.actions == (Output(OFPP_CONTROLLER),)
        assert (phys.goto, phys.extra) == (None, WRITE)
        assert tr.form_of(phys.cookie) == tr.CTL_ONLY


def test_a_copy_the_switch_forwards_keeps_goto_and_instructions():
    ls = build(2, [True, True], [False, False], [False, False], [False, False])
    rule = Rule(10, match_of(in_port=1), (Output(2),), goto=1, extra=WRITE)
    single = Mapping().add_switch(3, (1, 2))
    for s, inst in [(ls, ls.instances[A]), (ls, ls.instances[B]), (single, single.instances[3])]:
        (phys,), _ = tr.translate(s, inst, rule, 5)
        assert (phys.goto, phys.extra, tr.form_of(phys.cookie)) == (1, WRITE, 0)
    (phys,), _ = tr.translate(single, single.instances[3], rule, 5, same=tr.identical(single))
    assert (phys.goto, phys.extra) == (1, WRITE)


@settings(max_examples=300, deadline=None)
@given(cases(), st.booleans(), st.booleans(), st.one_of(st.none(), st.integers(1, 3)),
       st.booleans())
def test_a_copy_that_sends_to_the_shim_never_goes_on_down_the_pipeline(case, single, phase_one,
                                                                        goto, write):
    """A phase-1 or to-controller-only copy has no goto (every packet it takes goes to the shim,
    which forwards it by the later tables too) and keeps write-actions and other instructions;
    any other copy keeps both."""
    ls, rule = case
    if single:
        ls = Mapping().add_switch(A, ls.ports)
    rule = replace(rule, goto=goto, extra=WRITE if write else ())
    for inst in ls.instances.values():
        rules, _ = tr.translate(ls, inst, rule, 7, phase_one, same=tr.identical(ls))
        for phys in rules:
            if tr.form_of(phys.cookie):
                assert (phys.goto, phys.extra) == (None, rule.extra)
                assert phys.actions == (Output(OFPP_CONTROLLER),)
            else:
                assert (phys.goto, phys.extra) == (goto, rule.extra)
        assert bool(phase_one) <= all(tr.form_of(r.cookie) & tr.PHASE_ONE for r in rules)


@pytest.mark.parametrize("serial", [0, tr.SERIAL_MASK, -1])
def test_bad_serials_are_refused(serial):
    with pytest.raises(ValueError):
        tr.shim_cookie(serial)


def test_mapping_refuses_bad_requests_and_changes_nothing():
    m = Mapping()
    m.add_switch(3, (1, 2))
    m.add_switch(1, (1, 2))
    before = m.to_json()
    with pytest.raises(MappingError, match="unknown logical switch"):
        m.add_instance(9, Instance(0x109))
    with pytest.raises(MappingError, match="already in use"):
        m.add_instance(3, Instance(1))
    m.add_instance(3, Instance(0x103, {1: Local(1)}, {1: 1}))
    after_clone = m.to_json()
    with pytest.raises(MappingError, match="already in use"):
        m.add_instance(1, Instance(0x103))
    with pytest.raises(MappingError, match="not a port"):
        m.set_instance(3, Instance(0x103, {5: Local(1)}, {}))
    with pytest.raises(MappingError, match="not another instance"):
        m.set_instance(3, Instance(0x103, {1: Local(1), 2: Tunnel(9, 5, 7, 9)}, {}))
    with pytest.raises(MappingError, match="not local on tunnel peer"):
        m.set_instance(3, Instance(3, {1: Local(1), 2: Tunnel(9, 5, 0x103, 9)}, {1: 1, 2: 2}))
    with pytest.raises(MappingError, match="1..4094"):
        m.set_instance(3, Instance(0x103, {2: Tunnel(9, 0, 3, 9)}, {}))
    with pytest.raises(MappingError, match="last instance"):
        m.remove_instance(1, 1)
    assert m.to_json() == after_clone != before
    m.set_instance(3, Instance(0x103, {1: Local(1), 2: Tunnel(9, 5, 3, 8)}, {1: 1}))
    with pytest.raises(MappingError, match="still tunnels"):
        m.remove_instance(3, 3)
    assert Mapping.from_json(m.to_json()).to_json() == m.to_json()
    with pytest.raises(MappingError, match="does not parse"):
        Mapping.from_json('[{"dpid": 1}]')


@settings(max_examples=300, deadline=None)
@given(cases(), st.data())
def test_a_packet_out_reaches_each_logical_port_once_from_one_instance_each(case, data):
    ls, rule = case
    in_lport = data.draw(st.one_of(st.none(), st.sampled_from(ls.ports)))
    prefer = data.draw(st.one_of(st.none(), st.sampled_from(sorted(ls.instances))))
    plan = tr.packet_out_plan(ls, in_lport, rule.actions, prefer=prefer)
    wire = wiring(ls)
    got: Counter = Counter()
    for pdpid, (pin, acts) in plan.items():
        table = {d: list(tr.tunnel_ends(ls, i)) for d, i in ls.instances.items()}
        table[pdpid] = table[pdpid] + [Rule(0, (("in_port", pin),), acts)]
        got.update(run(table, wire, pdpid, pin))
        if in_lport is not None and ls.instances[pdpid].inputs_of(in_lport):
            assert pin in ls.instances[pdpid].inputs_of(in_lport)
    want = Counter()
    for p in rule.outputs():
        if p == OFPP_FLOOD:
            want.update(("lport", q) for q in ls.ports if q != in_lport)
        elif p != OFPP_CONTROLLER and p != in_lport:
            want[("lport", p)] += 1
    assert got == want


def test_packet_out_plan_prefers_the_instance_the_packet_came_from():
    ls = build(2, [True, True], [False, False], [False, False], [False, False])
    plan = tr.packet_out_plan(ls, 1, (Output(OFPP_FLOOD),), prefer=B)
    assert plan == {B: (11, (Output(12),))}
    plan = tr.packet_out_plan(ls, None, (Output(2),))
    assert plan == {A: (OFPP_CONTROLLER, (Output(2),))}


@settings(max_examples=200, deadline=None)
@given(cases(), st.data())
def test_after_a_map_change_sync_leaves_exactly_the_new_translation(case, data):
    """The bridge's copies of a rule, brought from one map to the next by sync()'s ADDs and
    deletes, are the new translation: no copy of the old map outlives it (it could loop)."""
    ls, rule = case
    before = {d: {r.key: r for r in tr.translate(ls, i, rule, 7)[0]} for d, i in ls.instances.items()}
    a = ls.instances[A]
    lp = data.draw(st.sampled_from(ls.ports))
    b_local = ls.instances[B].local(lp)
    if b_local is not None and not isinstance(a.out.get(lp), Tunnel):
        a.out[lp] = Tunnel(A_VIA, 200 + lp, B, B_VIA)  # the port's host moved to B
    else:
        a.ins[40 + lp] = lp                            # a neighbour's second link
    for d, inst in ls.instances.items():
        new_rules, _ = tr.translate(ls, inst, rule, 7)
        adds, deletes = tr.sync(before[d], new_rules)
        held = dict(before[d])
        for r in deletes:
            del held[r.key]
        for r in adds:
            held[r.key] = r
        assert held == {r.key: r for r in new_rules}
        assert not [r for r in adds if before[d].get(r.key) == r], "an unchanged copy re-sent"


def test_mapping_refuses_places_that_would_break_forwarding():
    m = Mapping()
    ls = m.add_switch(3, (1, 2, 3))
    m.add_instance(3, Instance(0x103, {1: Local(1), 2: Local(2)}, {1: 1, 2: 2}))
    orig = ls.instances[3]
    with pytest.raises(MappingError, match="cannot be logical ports"):
        m.set_instance(3, Instance(3, {1: Local(1), 2: Local(1), 3: Local(3)}, {1: 1, 3: 3}))
    with pytest.raises(MappingError, match="is an input of"):
        m.set_instance(3, Instance(3, {1: Local(1), 2: Local(2), 3: Local(3)}, {1: 1, 2: 3, 3: 3}))
    with pytest.raises(MappingError, match="also ports of the switch"):  # via = a host port
        m.set_instance(3, Instance(3, {1: Tunnel(2, 5, 0x103, 9), 2: Local(2), 3: Local(3)},
                                   {2: 2, 3: 3}))
    with pytest.raises(MappingError, match="also a port of the switch"):  # arrives on a host port
        m.set_instance(3, Instance(3, {1: Tunnel(9, 5, 0x103, 2), 2: Local(2), 3: Local(3)},
                                   {2: 2, 3: 3}))
    m.set_instance(3, Instance(3, {1: Tunnel(9, 5, 0x103, 9), 2: Local(2), 3: Local(3)},
                               {2: 2, 3: 3}))
    m2 = Mapping.from_json(m.to_json())
    with pytest.raises(MappingError, match="use VLAN 5"):  # a third instance, the same tag
        m2.add_instance(3, Instance(0x203, {1: Tunnel(9, 5, 0x103, 9), 2: Local(2)}, {2: 2}))
    assert ls.instances[3] is not orig


def test_what_the_shim_does_with_a_packet_in_depends_on_the_copy_that_raised_it():
    fwd = (Output(2),)
    both = (Output(2), Output(OFPP_CONTROLLER))
    assert tr.packet_in_plan(tr.PHASE_ONE, fwd) == (fwd, False)
    assert tr.packet_in_plan(tr.PHASE_ONE, both) == (fwd, True)
    assert tr.packet_in_plan(tr.PHASE_ONE, None) == (None, False)
    assert tr.packet_in_plan(tr.CTL_ONLY, both) == (fwd, True)
    assert tr.packet_in_plan(0, (Output(OFPP_CONTROLLER),)) == (None, True)
    assert tr.packet_in_plan(0, None) == (None, True)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.lists(st.sampled_from(list(range(1, 9)) + [OFPP_FLOOD, OFPP_IN_PORT,
                                                                    OFPP_CONTROLLER]),
                                   max_size=3),
       st.one_of(st.none(), st.integers(1, 8)), st.integers(0, 5), st.booleans())
def test_the_short_cut_for_a_switch_where_it_was_gives_the_full_translation(n, outs, in_port,
                                                                              hard, phase_one):
    """`identical` switches (ports 1..n of 1..8: the rest hidden, like lime_reserved's) take a
    short cut in `translate`; it must give exactly what the full translation gives."""
    ls = Mapping().add_switch(7, tuple(range(1, n + 1)))
    same = tr.identical(ls)
    assert same == frozenset(ls.ports)
    fields = {"eth_dst": "00:00:00:00:00:02", **({"in_port": in_port} if in_port else {})}
    rule = Rule(10, match_of(**fields), tuple(Output(p) for p in outs), hard_timeout=hard)
    inst = ls.instances[7]
    assert tr.translate(ls, inst, rule, 3, phase_one, same=same) == \
        tr.translate(ls, inst, rule, 3, phase_one)


def test_a_moved_or_migrating_switch_is_not_identical():
    m = Mapping()
    ls = m.add_switch(3, (1, 2))
    m.add_instance(3, Instance(0x103, {1: Local(5), 2: Local(6)}, {5: 1, 6: 2}))
    assert tr.identical(ls) is None
    m.remove_instance(3, 3)
    assert tr.identical(ls) is None  # on 0x103 now, with other port numbers
