"""LIME statistics: the instances' rows as the one switch an app asked, counters that never go
back, emulated timeouts that follow the app's table, and replies built per OpenFlow version."""
from __future__ import annotations

import pytest

from lime_shim import ofstats, stats
from lime_shim.mapping import Instance, Local, Tunnel
from lime_shim.merge import Counters
from lime_shim.model import OFPP_ANY, Output, Rule, match_of
from lime_shim.table import OFPG_ANY, OFPTT_ALL, Entry
from lime_shim.timeouts import IDLE, Timeouts
from lime_shim.translate import TUNNEL_COOKIE, shim_cookie
from sdnmig import compat

VERSIONS = sorted(compat.OFPROTOS)
RULE = Rule(10, match_of(in_port=1, eth_dst="00:00:00:00:00:02"), (Output(2),), cookie=0x77)


def test_copies_are_summed_by_rule_and_the_shims_own_rules_left_out():
    rows = {3: [(shim_cookie(1), 5, 500), (shim_cookie(1, 1 << 47), 1, 100), (TUNNEL_COOKIE, 9, 9),
                (0x1234, 7, 7)],
            0x103: [(shim_cookie(1), 2, 200), (shim_cookie(2), 4, 400)]}
    live = stats.flow_live(rows)
    assert sorted(live) == [1, 2]
    c = Counters()
    assert stats.total(c, 1, live, 2) == (8, 800)
    assert stats.total(c, 9, live, 2) == (0, 0)


def test_ports_count_where_they_are_local_and_never_go_back_after_an_instance_leaves():
    s3 = Instance(3, {1: Local(1), 2: Local(2)}, {1: 1, 2: 2})
    s3p = Instance(0x103, {1: Local(5), 2: Tunnel(6, 7, 3, 9)}, {5: 1})
    rows = {3: [(1, (10, 1)), (2, (20, 2)), (9, (99, 9))], 0x103: [(5, (3, 0)), (6, (50, 5))]}
    live = stats.port_live({3: s3, 0x103: s3p}, rows)
    assert live == {1: [(10, 1), (3, 0)], 2: [(20, 2)]}
    lc = stats.LogicalCounters()
    assert stats.total(lc.ports, 1, live, 2) == (13, 1)
    lc.fold_rows(lc.ports, stats.port_live({3: s3}, {3: rows[3]}))   # s3 leaves
    after = stats.port_live({0x103: s3p}, {0x103: [(5, (4, 0))]})
    assert stats.total(lc.ports, 1, after, 2) == (14, 1)


def test_a_joining_instance_starts_from_its_baseline():
    s3p = Instance(0x103, {1: Local(5)}, {5: 1})
    lc = stats.LogicalCounters()
    lc.fold_rows(lc.ports, stats.port_live({0x103: s3p}, {0x103: [(5, (40, 4))]}), -1)
    live = stats.port_live({0x103: s3p}, {0x103: [(5, (42, 6))]})
    assert stats.total(lc.ports, 1, live, 2) == (2, 2)


@pytest.mark.parametrize("want, ok", [
    (dict(), True), (dict(table_id=1), False), (dict(out_port=2), True), (dict(out_port=3), False),
    (dict(out_group=1), False), (dict(cookie=0x70, cookie_mask=0xF0), True),
    (dict(cookie=0x10, cookie_mask=0xF0), False), (dict(match=match_of(in_port=1)), True),
    (dict(match=match_of(in_port=2)), False)])
def test_flow_requests_select_the_apps_rules_as_openflow_does(want, ok):
    args = dict(table_id=OFPTT_ALL, out_port=OFPP_ANY, out_group=OFPG_ANY, cookie=0,
                cookie_mask=0, match=())
    args.update(want)
    assert stats.selects(RULE, **args) is ok


def test_a_removed_copy_counts_for_its_rule_only_if_it_is_a_copy_of_it():
    assert stats.same_copy(RULE, 0, 10, match_of(in_port=7, eth_dst="00:00:00:00:00:02"))
    assert not stats.same_copy(RULE, 0, 11, match_of(in_port=7, eth_dst="00:00:00:00:00:02"))
    assert not stats.same_copy(RULE, 0, 10, match_of(in_port=7, eth_dst="00:00:00:00:00:03"))
    assert not stats.same_copy(RULE, 0, 10, match_of(eth_dst="00:00:00:00:00:02"))


def test_emulated_timeouts_follow_the_table_and_keep_the_time_already_lived():
    t = Timeouts()
    timed = Rule(1, (), (), idle_timeout=2, hard_timeout=10)
    stats.track(t, [Entry(1, timed, 100.0), Entry(2, RULE, 100.0)])
    assert sorted(t.rules) == [1]
    assert t.rules[1].added == 100.0
    stats.track(t, [Entry(1, timed, 105.0)])  # replaced by an ADD: timed again
    assert t.rules[1].added == 105.0
    assert t.poll(106.0, {1: 0}) == []
    assert t.poll(107.5, {1: 0}) == [(1, IDLE)]
    stats.track(t, [Entry(1, timed, 105.0)])
    stats.track(t, [])
    assert not t.rules


def test_the_switch_gets_what_is_left_of_a_hard_timeout():
    assert stats.hard_left(10, 100.0, 100.0) == 10
    assert stats.hard_left(10, 100.0, 103.5) == 7
    assert stats.hard_left(10, 100.0, 200.0) == 1
    assert stats.hard_left(0, 100.0, 200.0) == 0


def test_offsets_survive_a_restart_by_rule_key_port_and_table():
    lc = stats.LogicalCounters()
    lc.flows.fold(4, (5, 50))
    lc.ports.fold(1, (1, 2, 3))
    lc.tables.fold(0, (7, 8))
    doc = lc.to_doc({4: RULE})
    import json
    back = stats.LogicalCounters.from_doc(json.loads(json.dumps(doc)))
    assert back.ports.offset == {1: (1, 2, 3)} and back.tables.offset == {0: (7, 8)}
    back.rule_added(1, RULE)  # the app installs its rule again: a new serial, the old counts
    assert back.flows.offset == {1: (5, 50)}
    back.rule_added(2, RULE)
    assert back.flows.offset == {1: (5, 50)}


@pytest.mark.parametrize("version", VERSIONS)
def test_requests_and_replies_per_version(version):
    dp = compat.protocol(version)
    ofp, parser = dp.ofproto, dp.ofproto_parser
    for kind in ("flow", "port", "table"):
        req = ofstats.request(dp, kind)
        req.serialize()
    app_req = parser.OFPFlowStatsRequest(dp, 0, OFPTT_ALL, OFPP_ANY, OFPG_ANY, 0, 0,
                                         parser.OFPMatch())
    app_req.xid = 42
    if version >= 6:  # 1.5: the app may ask FLOW_DESC too (the shim asks it for cookies)
        assert type(ofstats.request(dp, "flow")).__name__ == "OFPFlowDescStatsRequest"
    reply = ofstats.flow_reply(dp, app_req, [(RULE, 1.5, (3, 300))])
    assert reply.xid == 42 and reply.flags == 0 and len(reply.body) == 1
    row = reply.body[0]
    assert row.priority == 10
    assert ofstats.flow_rows([row])[0][1:] == (3, 300) if hasattr(row, "cookie") else True
    agg = parser.OFPAggregateStatsRequest(dp, 0, OFPTT_ALL, OFPP_ANY, OFPG_ANY, 0, 0,
                                          parser.OFPMatch())
    body = ofstats.flow_reply(dp, agg, [(RULE, 1.0, (3, 300)), (RULE, 1.0, (1, 100))]).body
    assert ofstats.removed_count(body) == (4, 400)
    removed = ofstats.flow_removed(dp, RULE, ofp.OFPRR_IDLE_TIMEOUT, 2.25, (4, 400))
    assert removed.cookie == 0x77 and ofstats.removed_count(removed) == (4, 400)
    assert removed.reason == ofp.OFPRR_IDLE_TIMEOUT


@pytest.mark.parametrize("version", VERSIONS)
def test_port_and_table_replies_copy_a_physical_row_with_logical_numbers(version):
    dp = compat.protocol(version)
    parser = dp.ofproto_parser
    fields = ofstats.PORT_FIELDS if version == 4 else ofstats.PORT_FIELDS[:8]
    like = parser.OFPPortStats(**dict({f: 1 for f in fields}, port_no=7, duration_sec=3,
                                      duration_nsec=0),
                               **({} if version == 4 else {"properties": []}))
    assert ofstats.port_rows([like]) == [(7, (1,) * len(fields))]
    req = parser.OFPPortStatsRequest(dp, 0, OFPP_ANY)
    req.xid = 5
    got = ofstats.port_reply(dp, req, [(2, like, tuple(range(len(fields))))]).body[0]
    assert got.port_no == 2 and got.tx_packets == 1 and like.port_no == 7
    treq = parser.OFPTableStatsRequest(dp, 0)
    treq.xid = 6
    t = ofstats.table_reply(dp, treq, [(0, 3, (10, 9))]).body[0]
    assert ofstats.table_rows([t]) == [(0, (10, 9))] and t.active_count == 3
