"""`LearningCore`: L2 learning decisions and the Redis writes that go with each one.

The app commits a decision's writes before acting on it, so the property that matters most is
that the writes, applied to an empty Redis, always reproduce the core's cache exactly.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, List, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ryu_apps.learning.core import (Count, Forward, LearningCore, Learn, is_group, is_link_local,
                                    mac_of, mac_text)

DPID = 0x1
H1 = bytes.fromhex("0000000000a1")
H2 = bytes.fromhex("0000000000a2")
H3 = bytes.fromhex("0000000000a3")
BROADCAST = b"\xff" * 6
IPV6_MCAST = bytes.fromhex("333300000001")
STP = bytes.fromhex("0180c2000000")
LLDP = bytes.fromhex("0180c200000e")
LAST_LINK_LOCAL = bytes.fromhex("0180c200000f")
FIRST_NOT_LINK_LOCAL = bytes.fromhex("0180c2000010")


def learns(writes: List[object]) -> List[Learn]:
    return [w for w in writes if isinstance(w, Learn)]


def counts(writes: List[object]) -> Dict[str, int]:
    out: Counter = Counter()
    for w in writes:
        if isinstance(w, Count):
            out[w.field] += w.n
    return dict(out)


# -- MAC helpers ----------------------------------------------------------------------------------

def test_mac_text_is_colon_separated_lower_hex() -> None:
    assert mac_text(bytes.fromhex("0A1B2C3D4E5F")) == "0a:1b:2c:3d:4e:5f"


@pytest.mark.parametrize("mac,group", [(H1, False), (BROADCAST, True), (IPV6_MCAST, True),
                                       (STP, True), (bytes.fromhex("020000000001"), False)])
def test_group_bit_is_the_lowest_bit_of_the_first_octet(mac: bytes, group: bool) -> None:
    assert is_group(mac) is group


@pytest.mark.parametrize("mac,link_local", [(STP, True), (LLDP, True), (LAST_LINK_LOCAL, True),
                                            (FIRST_NOT_LINK_LOCAL, False), (BROADCAST, False),
                                            (H1, False)])
def test_link_local_is_01_80_c2_00_00_00_to_0f(mac: bytes, link_local: bool) -> None:
    assert is_link_local(mac) is link_local


# -- decisions ------------------------------------------------------------------------------------

def test_unknown_destination_is_flooded_and_the_source_learnt() -> None:
    core = LearningCore()
    decision, writes = core.packet_in(DPID, 1, H1, H2)
    assert decision == Forward(None, False)
    assert learns(writes) == [Learn(DPID, H1, 1)]
    assert counts(writes) == {"packet_in": 1, "host:" + mac_text(H1): 1, "flooded": 1}
    assert core.tables == {DPID: {H1: 1}}


def test_known_destination_is_forwarded_with_a_flow_install() -> None:
    core = LearningCore()
    core.packet_in(DPID, 1, H1, H2)
    decision, writes = core.packet_in(DPID, 2, H2, H1)
    assert decision == Forward(1, True)
    assert learns(writes) == [Learn(DPID, H2, 2)]
    assert counts(writes) == {"packet_in": 1, "host:" + mac_text(H2): 1, "installed": 1}


def test_already_known_source_on_the_same_port_writes_no_learn() -> None:
    """Redis is only written when the table changes (counters aside)."""
    core = LearningCore()
    core.packet_in(DPID, 1, H1, H2)
    _, writes = core.packet_in(DPID, 1, H1, H2)
    assert learns(writes) == []
    assert counts(writes)["host:" + mac_text(H1)] == 1


@pytest.mark.parametrize("dst", [BROADCAST, IPV6_MCAST])
def test_group_destination_is_always_flooded(dst: bytes) -> None:
    core = LearningCore()
    core.load(DPID, {dst: 5})  # even if a (bogus) entry exists for it
    decision, writes = core.packet_in(DPID, 1, H1, dst)
    assert decision == Forward(None, False)
    assert counts(writes)["flooded"] == 1


@pytest.mark.parametrize("src", [BROADCAST, IPV6_MCAST, STP])
def test_group_source_is_neither_learnt_nor_counted_as_a_host(src: bytes) -> None:
    core = LearningCore()
    decision, writes = core.packet_in(DPID, 3, src, H2)
    assert decision == Forward(None, False)
    assert learns(writes) == []
    assert counts(writes) == {"packet_in": 1, "flooded": 1}
    assert core.tables[DPID] == {}


@pytest.mark.parametrize("dst", [STP, LLDP, LAST_LINK_LOCAL])
def test_link_local_destination_is_dropped_and_only_counted(dst: bytes) -> None:
    core = LearningCore()
    decision, writes = core.packet_in(DPID, 1, H1, dst)
    assert decision is None
    assert writes == [Count(DPID, "packet_in")]
    assert core.tables[DPID] == {}, "a bridge does not learn from frames it consumes"


def test_first_address_above_the_link_local_range_is_flooded() -> None:
    decision, _ = LearningCore().packet_in(DPID, 1, H1, FIRST_NOT_LINK_LOCAL)
    assert decision == Forward(None, False)


def test_destination_on_the_ingress_port_is_dropped() -> None:
    """Both hosts behind the same port (a hub or another switch): sending it back is wrong."""
    core = LearningCore()
    core.packet_in(DPID, 4, H2, H1)
    decision, writes = core.packet_in(DPID, 4, H1, H2)
    assert decision is None
    assert "installed" not in counts(writes) and "flooded" not in counts(writes)
    assert learns(writes) == [Learn(DPID, H1, 4)], "the source is still learnt"


def test_host_moving_port_is_relearnt_and_traffic_follows_it() -> None:
    core = LearningCore()
    core.packet_in(DPID, 1, H1, BROADCAST)
    _, writes = core.packet_in(DPID, 7, H1, BROADCAST)
    assert learns(writes) == [Learn(DPID, H1, 7)]
    decision, _ = core.packet_in(DPID, 2, H2, H1)
    assert decision == Forward(7, True)


def test_switches_learn_independently() -> None:
    core = LearningCore()
    core.packet_in(1, 1, H1, BROADCAST)
    decision, writes = core.packet_in(2, 5, H2, H1)
    assert decision == Forward(None, False), "H1 is known on switch 1 only"
    assert all(w.dpid == 2 for w in writes)
    assert core.tables == {1: {H1: 1}, 2: {H2: 5}}


def test_per_host_counts_accumulate_per_source() -> None:
    core = LearningCore()
    total: Counter = Counter()
    for src in (H1, H1, H2, H1, BROADCAST):
        _, writes = core.packet_in(DPID, 1, src, H3)
        total.update(counts(writes))
    assert total["host:" + mac_text(H1)] == 3
    assert total["host:" + mac_text(H2)] == 1
    assert total["packet_in"] == 5 and total["flooded"] == 5
    assert not any(k == "host:" + mac_text(BROADCAST) for k in total)


# -- port_down, load, forget ----------------------------------------------------------------------

def test_port_down_forgets_only_the_hosts_on_that_port_and_returns_the_deletes() -> None:
    core = LearningCore()
    core.load(DPID, {H1: 1, H2: 2, H3: 1})
    core.load(2, {H1: 1})
    writes = core.port_down(DPID, 1)
    assert sorted(writes, key=lambda w: w.mac) == [Learn(DPID, H1, None), Learn(DPID, H3, None)]
    assert core.tables == {DPID: {H2: 2}, 2: {H1: 1}}, "other ports and switches are untouched"
    decision, _ = core.packet_in(DPID, 2, H2, H1)
    assert decision == Forward(None, False), "a forgotten host is flooded to again"


def test_port_down_with_nothing_on_it_or_an_unknown_switch_writes_nothing() -> None:
    core = LearningCore()
    core.load(DPID, {H1: 1})
    assert core.port_down(DPID, 9) == []
    assert core.port_down(0xBEEF, 1) == []
    assert 0xBEEF not in core.tables


def test_load_copies_the_table_and_forget_switch_drops_it() -> None:
    table = {H1: 3}
    core = LearningCore()
    core.load(DPID, table)
    core.packet_in(DPID, 4, H2, H1)
    assert table == {H1: 3}, "load must not alias the caller's dict"
    assert core.known(DPID)
    core.forget_switch(DPID)
    assert not core.known(DPID)
    core.forget_switch(DPID)  # idempotent


# -- property: the writes reproduce the cache -----------------------------------------------------

MACS = st.sampled_from([H1, H2, H3, bytes.fromhex("020000000004"), BROADCAST, IPV6_MCAST, STP,
                        LAST_LINK_LOCAL, FIRST_NOT_LINK_LOCAL])
PORTS = st.integers(1, 4)
DPIDS = st.sampled_from([1, 2, 0xFFFF_FFFF_FFFF_FFFF])
OPS = st.lists(st.one_of(
    st.tuples(st.just("packet_in"), DPIDS, PORTS, MACS, MACS),
    st.tuples(st.just("port_down"), DPIDS, PORTS),
    st.tuples(st.just("forget"), DPIDS),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_applying_the_returned_writes_reproduces_the_cache(ops: List[Tuple]) -> None:
    """What the app commits to Redis always equals the core's cache (for the switches it keeps),
    and the counters add up to what was decided."""
    core = LearningCore()
    redis_macs: Dict[int, Dict[bytes, int]] = {}
    stats: Dict[int, Counter] = {}
    decided: Counter = Counter()
    for op in ops:
        if op[0] == "forget":
            # The app forgets a switch it is no longer master of; its Redis state stays, and a
            # later master reloads it (core.load) before deciding again.
            core.forget_switch(op[1])
            if op[1] in redis_macs:
                core.load(op[1], redis_macs[op[1]])
            continue
        if op[0] == "packet_in":
            _, dpid, port, src, dst = op
            decision, writes = core.packet_in(dpid, port, src, dst)
            decided["packet_in", dpid] += 1
            if decision is not None:
                decided["installed" if decision.install else "flooded", dpid] += 1
                assert decision.port != port
                assert decision.install is (decision.port is not None)
        else:
            _, dpid, port = op
            writes = core.port_down(dpid, port)
            assert all(isinstance(w, Learn) and w.port is None for w in writes)
        for w in writes:
            if isinstance(w, Learn):
                table = redis_macs.setdefault(w.dpid, {})
                if w.port is None:
                    assert w.mac in table, "deleting a host Redis never had"
                    del table[w.mac]
                else:
                    table[w.mac] = w.port
            else:
                assert isinstance(w, Count) and w.n == 1
                stats.setdefault(w.dpid, Counter())[w.field] += w.n
    nonempty = {d: t for d, t in redis_macs.items() if t}
    assert nonempty == {d: t for d, t in core.tables.items() if t}
    for (fld, dpid), n in decided.items():
        assert stats[dpid][fld] == n
    for dpid, table in core.tables.items():
        for mac in table:
            assert not is_group(mac)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(PORTS, MACS, MACS), max_size=40), PORTS)
def test_port_down_leaves_no_host_on_that_port(pkts: List[Tuple[int, bytes, bytes]],
                                               down: int) -> None:
    core = LearningCore()
    for port, src, dst in pkts:
        core.packet_in(DPID, port, src, dst)
    before = dict(core.tables.get(DPID, {}))
    writes = core.port_down(DPID, down)
    after = core.tables.get(DPID, {})
    assert down not in after.values()
    assert {w.mac for w in writes} == {m for m, p in before.items() if p == down}
    assert after == {m: p for m, p in before.items() if p != down}



def test_mac_of_reads_back_what_mac_text_wrote() -> None:
    mac = bytes.fromhex("02005a0001ff")
    assert mac_text(mac) == "02:00:5a:00:01:ff"
    assert mac_of(mac_text(mac)) == mac == mac_of("02005a0001ff")
