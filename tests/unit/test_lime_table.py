"""The shim's logical flow table follows OpenFlow's FLOW_MOD rules (as OVS applies them)."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lime_shim.model import OFPP_CONTROLLER, Output, Rule, match_of
from lime_shim.table import (OFPFC_ADD, OFPFC_DELETE, OFPFC_DELETE_STRICT, OFPFC_MODIFY,
                             OFPFC_MODIFY_STRICT, OFPFF_RESET_COUNTS, OFPTT_ALL, FlowMod,
                             FlowTable, covers, packet_matches)

H1, H2 = "00:00:00:00:00:01", "00:00:00:00:00:02"


def add(t, prio, out, now=0.0, table_id=0, cookie=0, flags=0, goto=None, **m):
    return t.apply(FlowMod(OFPFC_ADD, Rule(prio, match_of(**m), (Output(out),) if out else (),
                                           table_id=table_id, cookie=cookie, flags=flags,
                                           goto=goto)), now)


def test_add_of_the_same_entry_replaces_it_and_keeps_its_serial_unless_reset_counts():
    t = FlowTable()
    (e1,) = add(t, 10, 2, eth_dst=H2).added
    ch = add(t, 10, 3, eth_dst=H2)
    assert ch.added[0].serial == e1.serial and ch.removed == () and len(t) == 1
    ch = add(t, 10, 3, flags=OFPFF_RESET_COUNTS, eth_dst=H2)
    assert ch.added[0].serial != e1.serial and ch.removed[0].serial == e1.serial
    add(t, 11, 3, eth_dst=H2)
    assert len(t) == 2


def test_modify_touches_every_more_specific_entry_and_strict_only_the_same_one():
    t = FlowTable()
    add(t, 10, 2, in_port=1, eth_dst=H2)
    add(t, 20, 2, in_port=2, eth_dst=H2)
    add(t, 10, 2, eth_dst=H1)
    ch = t.apply(FlowMod(OFPFC_MODIFY, Rule(0, match_of(eth_dst=H2), (Output(7),))), 1.0)
    assert len(ch.added) == 2 and all(e.rule.actions == (Output(7),) for e in ch.added)
    ch = t.apply(FlowMod(OFPFC_MODIFY_STRICT, Rule(10, match_of(eth_dst=H2), (Output(8),))), 1.0)
    assert ch.added == ()  # no entry has exactly that match and priority
    ch = t.apply(FlowMod(OFPFC_MODIFY_STRICT, Rule(10, match_of(eth_dst=H1), (Output(8),))), 1.0)
    assert [e.rule.actions for e in ch.added] == [(Output(8),)]


def test_delete_filters_by_cookie_out_port_and_table():
    t = FlowTable()
    add(t, 10, 2, cookie=0xA1, eth_dst=H2)
    add(t, 10, 3, cookie=0xB1, eth_dst=H1)
    add(t, 10, 3, cookie=0xA2, table_id=1, eth_dst=H1)
    ch = t.apply(FlowMod(OFPFC_DELETE, Rule(0, (), (), cookie=0xA0), cookie_mask=0xF0), 0)
    assert [e.rule.cookie for e in ch.removed] == [0xA1]  # table 0 only
    ch = t.apply(FlowMod(OFPFC_DELETE, Rule(0, (), (), table_id=OFPTT_ALL), out_port=3), 0)
    assert sorted(e.rule.cookie for e in ch.removed) == [0xA2, 0xB1]
    assert len(t) == 0


def test_delete_strict_needs_the_same_priority_and_match():
    t = FlowTable()
    add(t, 10, 2, eth_dst=H2)
    assert t.apply(FlowMod(OFPFC_DELETE_STRICT, Rule(11, match_of(eth_dst=H2), ())), 0).removed == ()
    assert len(t.apply(FlowMod(OFPFC_DELETE_STRICT, Rule(10, match_of(eth_dst=H2), ())), 0).removed) == 1


def test_lookup_takes_the_highest_priority_and_follows_goto():
    t = FlowTable()
    add(t, 0, OFPP_CONTROLLER)
    add(t, 10, 2, eth_dst=H2)
    add(t, 20, 0, goto=1, in_port=5, eth_dst=H2)
    add(t, 1, 9, table_id=1)
    add(t, 5, 4, ipv4_dst=("10.0.0.0", "255.255.255.0"), eth_type=0x800)
    assert [e.rule.outputs() for e in t.lookup({"in_port": 1, "eth_dst": H1})] == [(OFPP_CONTROLLER,)]
    assert [e.rule.outputs() for e in t.lookup({"in_port": 1, "eth_dst": H2})] == [(2,)]
    assert [e.rule.outputs() for e in t.lookup({"in_port": 5, "eth_dst": H2})] == [(), (9,)]
    pkt = {"in_port": 1, "eth_dst": H1, "eth_type": 0x800, "ipv4_dst": "10.0.0.7"}
    assert t.lookup(pkt)[0].rule.outputs() == (4,)
    assert t.lookup(dict(pkt, ipv4_dst="10.0.1.7"))[0].rule.outputs() == (OFPP_CONTROLLER,)


def test_covers_and_masks():
    assert covers((), match_of(eth_dst=H2))
    assert covers(match_of(eth_dst=H2), match_of(eth_dst=H2, in_port=1))
    assert not covers(match_of(eth_dst=H2, in_port=1), match_of(eth_dst=H2))
    net = ("10.0.0.0", "255.255.0.0")
    assert covers(match_of(ipv4_dst=net), match_of(ipv4_dst="10.0.3.4"))
    assert covers(match_of(ipv4_dst=net), match_of(ipv4_dst=("10.0.3.0", "255.255.255.0")))
    assert not covers(match_of(ipv4_dst=("10.0.3.0", "255.255.255.0")), match_of(ipv4_dst=net))
    assert not packet_matches(match_of(eth_dst=H2), {"eth_src": H2})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([OFPFC_ADD, OFPFC_MODIFY, OFPFC_DELETE,
                                           OFPFC_DELETE_STRICT, OFPFC_MODIFY_STRICT]),
                          st.integers(0, 2), st.sampled_from([None, H1, H2]),
                          st.sampled_from([None, 1, 2]), st.integers(1, 3)), max_size=25))
def test_entries_stay_unique_and_every_change_is_accounted_for(mods):
    t = FlowTable()
    live = {}
    for cmd, prio, dst, port, out in mods:
        fields = {k: v for k, v in (("eth_dst", dst), ("in_port", port)) if v is not None}
        ch = t.apply(FlowMod(cmd, Rule(prio, match_of(**fields), (Output(out),))), 0.0)
        for e in ch.removed:
            assert live.pop(e.serial).key == e.rule.key
        for e in ch.added:
            live[e.serial] = e.rule
        assert {e.serial: e.rule for e in t.rules()} == live
        assert len({e.rule.key for e in t.rules()}) == len(t)
        assert all(t.by_serial(e.serial) is e for e in t.rules())
        assert set(t.keys) == set(live)  # the serial index holds the live rules only
    t.apply(FlowMod(OFPFC_DELETE, Rule(0, (), (), table_id=OFPTT_ALL)), 0.0)
    assert len(t) == 0
