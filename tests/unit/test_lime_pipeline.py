"""The shim forwards a packet a shim-only copy raised by the app's rule and the tables its goto
leads to, as the switch would have: once, by every table on the packet's way."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lime_shim import ofconv
from lime_shim import translate as tr
from lime_shim.model import (OFPP_CONTROLLER, OFPP_FLOOD, OFPP_IN_PORT, Opaque, Output, Rule,
                             SetVlan, match_of)
from lime_shim.table import OFPFC_ADD, FlowMod, FlowTable
from sdnmig import compat

H1, H2, H3 = "00:00:00:00:00:01", "00:00:00:00:00:02", "00:00:00:00:00:03"
PKT = {"in_port": 1, "eth_src": H1, "eth_dst": H2, "eth_type": 0x800}


def table_of(*rules: Rule) -> FlowTable:
    t = FlowTable()
    for r in rules:
        t.apply(FlowMod(OFPFC_ADD, r), 0.0)
    return t


@dataclass(frozen=True)
class SetField:
    """Stands for the platform's OFPActionSetField (new API: `key`, `value`)."""

    key: str
    value: Any


FIRST = Rule(10, match_of(in_port=1), (Output(2),), goto=1)
LATER = Rule(5, match_of(eth_dst=H2), (Output(3),), table_id=1)


def test_a_first_half_packet_is_forwarded_by_the_rule_and_the_table_its_goto_leads_to():
    t = table_of(FIRST, LATER, Rule(1, (), (Output(4),), table_id=1))
    acts = tr.pipeline_actions(t, PKT, FIRST)
    assert acts == (Output(2), Output(3))
    assert tr.packet_in_plan(tr.PHASE_ONE, acts) == ((Output(2), Output(3)), False)
    assert tr.pipeline_actions(t, dict(PKT, eth_dst=H3), FIRST) == (Output(2), Output(4))


def test_a_later_table_that_sends_to_the_controller_makes_the_first_half_packet_reported():
    t = table_of(FIRST, Rule(5, (), (Output(OFPP_CONTROLLER), Output(3)), table_id=1))
    assert tr.packet_in_plan(tr.PHASE_ONE, tr.pipeline_actions(t, PKT, FIRST)) == \
        ((Output(2), Output(3)), True)


def test_a_ctl_only_packet_is_forwarded_by_every_table_on_its_way_and_reported():
    rule = Rule(10, match_of(in_port=1), (Output(OFPP_CONTROLLER), Output(2)), goto=1)
    two = Rule(5, (), (Output(OFPP_CONTROLLER), Output(3)), table_id=1, goto=2)
    t = table_of(rule, two, Rule(5, (), (Output(4),), table_id=2))
    assert tr.packet_in_plan(tr.CTL_ONLY, tr.pipeline_actions(t, PKT, rule)) == \
        ((Output(2), Output(3), Output(4)), True)


def test_a_miss_in_a_later_table_ends_the_way_and_a_goto_back_is_not_followed():
    assert tr.pipeline_actions(table_of(FIRST), PKT, FIRST) == (Output(2),)
    back = Rule(5, (), (Output(3),), table_id=1, goto=0)
    t = table_of(FIRST, back, Rule(1, (), (Output(9),), table_id=0))
    assert tr.pipeline_actions(t, PKT, FIRST) == (Output(2), Output(3))
    late = Rule(10, (), (Output(2),), table_id=2, goto=1)
    assert tr.pipeline_actions(t, PKT, late) == (Output(2),)


def test_with_no_rule_the_way_starts_at_table_0_as_a_lookup():
    t = table_of(Rule(10, match_of(in_port=1), (Output(OFPP_CONTROLLER), Output(2)), goto=1),
                 LATER)
    assert tr.pipeline_actions(t, PKT) == \
        tuple(a for e in t.lookup(PKT) for a in e.rule.actions) == \
        (Output(OFPP_CONTROLLER), Output(2), Output(3))
    assert tr.pipeline_actions(FlowTable(), PKT) == ()


def test_with_no_rule_the_way_starts_where_the_gone_rule_was():
    """The rule that raised the packet-in is gone: the tables before its own acted already."""
    t = table_of(FIRST, LATER)
    assert tr.pipeline_actions(t, PKT, start=1) == (Output(3),)


def test_a_set_field_changes_the_fields_the_next_table_looks_at():
    rule = Rule(10, match_of(in_port=1), (Opaque(SetField("eth_dst", H3)), Output(2)), goto=1)
    t = table_of(rule, LATER, Rule(5, match_of(eth_dst=H3), (Output(4),), table_id=1),
                 Rule(5, match_of(vlan_vid=0x1005), (Output(6),), table_id=2))
    assert tr.pipeline_actions(t, PKT, rule)[-1] == Output(4)
    tagged = Rule(10, (), (SetVlan(0x1005),), goto=2)
    assert tr.pipeline_actions(t, PKT, tagged) == (SetVlan(0x1005), Output(6))
    odd = Rule(10, (), (Opaque(SetField("eth_dst", ("x", "y"))), Opaque(object())), goto=1)
    assert tr.pipeline_actions(t, PKT, odd)[-1] == Output(3)  # unreadable: fields unchanged
    assert PKT["eth_dst"] == H2  # the caller's fields are left as they were


@pytest.mark.parametrize("version", sorted(compat.OFPROTOS))
def test_the_platforms_set_field_is_read_as_the_adapter_carries_it(version):
    dp = compat.protocol(version)
    acts = ofconv.actions_from(dp.ofproto, [dp.ofproto_parser.OFPActionSetField(eth_dst=H3)])
    rule = Rule(10, (), acts, goto=1)
    t = table_of(LATER, Rule(5, match_of(eth_dst=H3), (Output(4),), table_id=1))
    assert tr.pipeline_actions(t, PKT, rule) == acts + (Output(4),)


outputs = st.lists(st.sampled_from([Output(p) for p in (1, 2, 3, OFPP_FLOOD, OFPP_IN_PORT,
                                                        OFPP_CONTROLLER)] + [SetVlan(0x1005)]),
                   max_size=4).map(tuple)


@settings(max_examples=300, deadline=None)
@given(outputs, st.sampled_from([0, tr.PHASE_ONE, tr.CTL_ONLY, tr.PHASE_ONE | tr.CTL_ONLY]),
       st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3), outputs), max_size=4))
def test_without_goto_the_plan_is_the_rules_own(actions, form, others):
    """A rule with no goto: the packet is forwarded by its actions alone, whatever the table."""
    rule = Rule(10, match_of(in_port=1), actions)
    t = table_of(rule, *(Rule(p, (), a, table_id=tid, goto=tid + 1) for tid, p, a in others))
    assert tr.pipeline_actions(t, PKT, rule) == actions
    assert tr.packet_in_plan(form, tr.pipeline_actions(t, PKT, rule)) == \
        tr.packet_in_plan(form, actions)
