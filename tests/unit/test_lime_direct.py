"""Direct switches (lime_shim.app, "Direct switches"): a switch no migration has touched passes
its messages straight through, and is adopted (its bridge's rules read into the logical table)
before an operation changes its map. The shim is built without a platform: a fake bridge
connection answers its requests synchronously."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, List, Optional

import eventlet
import pytest

from experiments import ofbench as ob
from lime_shim import lime_ofp_event as lev
from lime_shim import ofconv, ofstats
from lime_shim import translate as tr
from lime_shim.app import LimeShim
from ryu_apps import ofmsgs
from ryu_apps.roles.core import Role
from sdnmig import compat

OFP, PARSER = compat.ofproto_v1_3, compat.ofproto_v1_3_parser
OFP15, PARSER15 = compat.ofproto_v1_5, compat.ofproto_v1_5_parser


class Bridge:
    """A physical datapath as the shim sees one: what is sent to it is kept; `answer` may reply
    to a request at once (as the event loop would, later)."""

    def __init__(self, dpid: int, ports: List[int]) -> None:
        self.id, self.ofproto, self.ofproto_parser = dpid, OFP, PARSER
        self.ports = {p: SimpleNamespace(port_no=p) for p in ports}
        self.xid = 100
        self.sent: List[Any] = []
        self.answer: Optional[Callable[[Any], None]] = None
        self.is_active = True

    def set_xid(self, msg: Any) -> int:
        self.xid += 1
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg: Any) -> bool:
        if msg.xid is None:
            self.set_xid(msg)
        self.sent.append(msg)
        if self.answer is not None:
            self.answer(msg)
        return True


class Roles:
    def admit(self, msg: Any) -> bool:
        return True

    def is_master(self, dpid: int) -> bool:
        return True


class Store:
    def __init__(self) -> None:
        self.kv: dict = {}

    def set(self, k: str, v: str) -> None:
        self.kv[k] = v

    def get(self, k: str) -> Any:
        return self.kv.get(k)


def shim_with(bridge_ports: List[int], hidden: List[int] = ()) -> tuple:
    """A shim holding logical switch 1 on bridge 1 (ports `bridge_ports`, `hidden` not the
    switch's), direct, ready; the events it gives apps collected."""
    shim = object.__new__(LimeShim)
    shim.init_state()
    shim.name, shim.redis, shim.spares = "lime_shim", Store(), frozenset()
    shim.hidden = frozenset()
    shim.reserved = {1: frozenset(hidden)}
    shim._roles, shim.loop = Roles(), eventlet.getcurrent()
    got: List[Any] = []
    shim._handlers_of = lambda ev, state: [("app", got.append)]
    dp = Bridge(1, bridge_ports)
    shim.phys[1] = dp
    shim._role_changed(SimpleNamespace(datapath=dp, role=Role.MASTER, released=()))
    dp.sent.clear()
    got.clear()  # the switch's appearance
    return shim, dp, shim.ldps[1], got


def flow_add(dp: Any, out: int, in_port: int = 1, cookie: int = 7) -> Any:
    return ofmsgs.flow_add(dp, 10, ofmsgs.l2_match(dp, in_port, b"\x02" * 6, b"\x04" * 6),
                           [ofmsgs.output(dp, out)], cookie=cookie)


def outputs(msg: Any) -> List[int]:
    acts = msg.actions if hasattr(msg, "actions") else [
        a for i in msg.instructions for a in i.actions]
    return [a.port for a in acts]


def test_an_untouched_switch_is_direct_and_its_rules_and_packets_pass_as_they_are():
    shim, dp, ldp, _ = shim_with([1, 2, 3])
    assert shim.direct[1].dp is dp and ldp.direct is shim.direct[1]
    fm = flow_add(ldp, 2)
    ldp.send_msg(fm)
    po = ofmsgs.packet_out(ldp, 1, [ofmsgs.output(ldp, OFP.OFPP_FLOOD)], OFP.OFP_NO_BUFFER, b"x" * 60)
    ldp.send_msg(po)
    assert dp.sent == [fm, po] and fm.cookie == 7  # the app's own messages, its cookie
    assert shim.tables[1].entries == {}  # no logical table kept while direct


def test_a_flood_on_a_switch_that_hides_a_port_is_translated_to_its_ports():
    shim, dp, ldp, _ = shim_with([1, 2, 3], hidden=[3])
    ldp.send_msg(flow_add(ldp, OFP.OFPP_FLOOD))
    ldp.send_msg(ofmsgs.packet_out(ldp, 1, [ofmsgs.output(ldp, OFP.OFPP_FLOOD)],
                                   OFP.OFP_NO_BUFFER, b"x" * 60))
    rule, out = dp.sent
    assert outputs(rule) == [2] and rule.cookie == 7  # (not back out of its ingress, port 1)
    assert outputs(out) == [2]
    dp.sent.clear()
    ldp.send_msg(flow_add(ldp, 3))  # a port the switch does not have: left out, as translated
    assert outputs(dp.sent[0]) == []
    dp.sent.clear()
    ldp.send_msg(flow_add(ldp, 2, in_port=3))  # matching on it: refused
    assert dp.sent == []


CTRL, IN_PORT, FLOOD, ALL = OFP.OFPP_CONTROLLER, OFP.OFPP_IN_PORT, OFP.OFPP_FLOOD, OFP.OFPP_ALL
TABLE, NORMAL, LOCAL = OFP.OFPP_TABLE, OFP.OFPP_NORMAL, OFP.OFPP_LOCAL


@pytest.mark.parametrize("hidden", [[], [3]])
@pytest.mark.parametrize("kind,in_port,out,as_is", [
    ("rule", 1, 2, True), ("rule", 1, IN_PORT, True), ("rule", 1, CTRL, True),
    ("rule", 1, 1, True),        # (a rule may name its own in_port: OVS drops that output)
    ("rule", 1, 9, False),       # a port neither has
    ("rule", 1, 3, False),       # the hidden one (or, without it, one neither has)
    ("rule", 9, 2, False),       # matching on a port it does not have
    ("rule", 1, FLOOD, None),    # as is only when the bridge hides nothing
    ("rule", 1, ALL, None), ("rule", 1, TABLE, True), ("rule", 1, NORMAL, True),
    ("rule", 1, LOCAL, True),
    ("packet", 1, 2, True), ("packet", 1, IN_PORT, True), ("packet", CTRL, 2, True),
    ("packet", CTRL, CTRL, True),
    ("packet", 1, 1, False),     # back out of its own port
    ("packet", 9, 2, False), ("packet", 1, 9, False), ("packet", 1, FLOOD, None),
    ("packet", 3, 2, False),     # from the hidden port (or, without it, one neither has)
    ("packet", 1, ALL, None), ("packet", 1, TABLE, True), ("packet", CTRL, LOCAL, True)])
def test_what_a_direct_switch_passes_as_it_is(hidden, kind, in_port, out, as_is):
    """The fast path's rule: only what means the same on the bridge goes to it unchanged;
    anything else takes the translated way (and may go out changed, or not at all)."""
    shim, dp, ldp, _ = shim_with([1, 2] + hidden, hidden=hidden)
    if as_is is None:
        as_is = not hidden
    if kind == "rule":
        msg = flow_add(ldp, out, in_port=in_port)
    else:
        msg = ofmsgs.packet_out(ldp, in_port, [ofmsgs.output(ldp, out)], OFP.OFP_NO_BUFFER,
                                b"x" * 60)
    ldp.send_msg(msg)
    assert (dp.sent == [msg]) is as_is


def test_a_direct_switch_passes_deletes_as_they_are_but_not_buffered_packets():
    shim, dp, ldp, _ = shim_with([1, 2, 3], hidden=[3])
    delete = ofmsgs.flow_delete(ldp, out_port=9)
    ldp.send_msg(delete)
    buffered = ofmsgs.packet_out(ldp, 1, [ofmsgs.output(ldp, 2)], 7, None)
    ldp.send_msg(buffered)
    assert dp.sent == [delete]  # (a buffer id the apps never saw names no packet: not sent)


def test_a_port_added_to_a_direct_bridge_makes_its_floods_translated():
    shim, dp, ldp, _ = shim_with([1, 2])
    ldp.send_msg(flow_add(ldp, FLOOD))
    dp.ports[5] = SimpleNamespace(port_no=5)
    desc = SimpleNamespace(port_no=5, state=0, config=0)
    shim._port_status(SimpleNamespace(msg=SimpleNamespace(datapath=dp, reason=OFP.OFPPR_ADD,
                                                          desc=desc)))
    ldp.send_msg(flow_add(ldp, FLOOD, cookie=8))
    first, second = dp.sent
    assert outputs(first) == [FLOOD] and outputs(second) == [2]


@pytest.mark.parametrize("alone", [True, False])
def test_a_direct_packet_in_reaches_the_apps_on_the_logical_datapath(alone):
    shim, dp, ldp, got = shim_with([1, 2, 3], hidden=[3])
    shim._alone_at = len(compat.app_manager.SERVICE_BRICKS)  # another app takes them, or not
    shim._pin_handlers = [("app", got.append)] if alone else None
    sent = []
    for port in (1, 3):
        msg = compat.parse(OFP.OFP_VERSION, ob.packet_in(9, OFP.OFP_NO_BUFFER, port,
                                                         ob.ethernet_frame(b"\x04" * 6,
                                                                           b"\x02" * 6)))
        msg.datapath = dp
        sent.append(msg)
        shim._phys_packet_in(compat.ofp_event.EventOFPPacketIn(msg))
    (ev,) = got  # the hidden port's packet dropped
    assert ev.msg.datapath is ldp and ev.msg.match["in_port"] == 1
    assert type(ev) is lev.EventOFPPacketIn
    assert (ev.msg is not sent[0]) is (not alone)  # the platform's message left as it was for others


def rule_row(cookie: int, in_port: int, out: int, hard: int = 0, secs: int = 3) -> Any:
    return PARSER.OFPFlowStats(
        table_id=0, duration_sec=secs, duration_nsec=0, priority=10, idle_timeout=0,
        hard_timeout=hard, flags=OFP.OFPFF_SEND_FLOW_REM, cookie=cookie, packet_count=4,
        byte_count=400, match=PARSER.OFPMatch(in_port=in_port),
        instructions=[PARSER.OFPInstructionActions(OFP.OFPIT_APPLY_ACTIONS,
                                                   [PARSER.OFPActionOutput(out)])])


def answer_rules(shim: LimeShim, dp: Bridge, rows: List[Any], during: Callable[[], None] = None):
    def answer(msg: Any) -> None:
        if type(msg).__name__ != "OFPFlowStatsRequest":
            return
        if during is not None:
            during()
        reply = PARSER.OFPFlowStatsReply(dp, flags=0, body=rows)
        reply.xid = msg.xid
        shim._stats_reply(SimpleNamespace(msg=reply))
    dp.answer = answer


def test_adoption_reads_the_bridges_rules_and_holds_the_apps_messages_meanwhile():
    shim, dp, ldp, _ = shim_with([1, 2, 3])
    held = flow_add(ldp, 1, in_port=2, cookie=8)
    answer_rules(shim, dp, [rule_row(5, 1, 2, hard=10)], during=lambda: ldp.send_msg(held))
    shim.adopt(shim.map.logical(1))
    assert 1 not in shim.direct and ldp.direct is None and 1 in shim.translated
    table = shim.tables[1]
    assert sorted(e.rule.cookie for e in table.rules()) == [5, 8]  # the bridge's, then the app's
    request, *adds = dp.sent
    assert type(request).__name__ == "OFPFlowStatsRequest" and request.cookie_mask == 0
    assert held not in dp.sent or dp.sent.index(held) > 0  # sent only after the adoption
    assert [tr.serial_of(m.cookie) is not None for m in adds] == [True, True]
    assert adds[0].hard_timeout in (6, 7)  # what is left of the bridge rule's 10 s
    assert '"translated": [1]' in shim.redis.kv["lime:map"]


def test_adoption_that_cannot_read_the_rules_leaves_the_switch_direct():
    shim, dp, ldp, _ = shim_with([1, 2, 3])
    held = flow_add(ldp, 2)

    def refuse(msg: Any) -> None:
        if type(msg).__name__ == "OFPFlowStatsRequest":
            ldp.send_msg(held)
            err = PARSER.OFPErrorMsg(dp, type_=OFP.OFPET_BAD_REQUEST,
                                     code=OFP.OFPBRC_BAD_MULTIPART, data=b"")
            err.xid = msg.xid
            shim._error(SimpleNamespace(msg=err))
    dp.answer = refuse
    with pytest.raises(ValueError, match="could not be read: nothing changed"):
        shim.adopt(shim.map.logical(1))
    assert shim.direct[1].dp is dp and ldp.direct is shim.direct[1]
    assert 1 not in shim.translated and not shim.adopting and shim.requests == {}
    assert dp.sent[-1] is held  # released, as it was


def test_an_adopted_rule_the_bridge_removed_before_its_copy_replaced_it_leaves_the_table():
    shim, dp, ldp, got = shim_with([1, 2, 3])
    answer_rules(shim, dp, [rule_row(5, 1, 2)])
    shim.adopt(shim.map.logical(1))
    removed = PARSER.OFPFlowRemoved(dp, cookie=5, priority=10, reason=OFP.OFPRR_IDLE_TIMEOUT,
                                    table_id=0, duration_sec=4, duration_nsec=0,
                                    idle_timeout=0, hard_timeout=0, packet_count=4,
                                    byte_count=400, match=PARSER.OFPMatch(in_port=1))
    removed.xid = 0
    shim._flow_removed(SimpleNamespace(msg=removed))
    assert len(shim.tables[1]) == 0
    assert [type(e.msg).__name__ for e in got][-1] == "OFPFlowRemoved"
    assert got[-1].msg.datapath is ldp and got[-1].msg.cookie == 5


def test_an_apps_statistics_request_to_a_direct_switch_is_answered_with_its_own_xid():
    shim, dp, ldp, got = shim_with([1, 2, 3], hidden=[3])
    req = PARSER.OFPPortStatsRequest(ldp, 0, OFP.OFPP_ANY)
    ldp.send_msg(req)
    (sent,) = dp.sent
    assert sent.xid != req.xid  # numbered on the bridge's connection
    rows = [PARSER.OFPPortStats(port_no=p, rx_packets=p, tx_packets=0, rx_bytes=0, tx_bytes=0,
                                rx_dropped=0, tx_dropped=0, rx_errors=0, tx_errors=0,
                                rx_frame_err=0, rx_over_err=0, rx_crc_err=0, collisions=0,
                                duration_sec=1, duration_nsec=0) for p in (1, 2, 3)]
    reply = PARSER.OFPPortStatsReply(dp, flags=0, body=rows)
    reply.xid = sent.xid
    shim._stats_reply(SimpleNamespace(msg=reply))
    (ev,) = got
    assert ev.msg.xid == req.xid and ev.msg.datapath is ldp
    assert [r.port_no for r in ev.msg.body] == [1, 2]  # the port the switch hides left out
    assert shim.passed == {}


def test_in_port_of_reads_every_kind_of_match():
    old = PARSER.OFPMatch()
    old.set_in_port(7)
    old.set_dl_src(b"\x00" * 6)
    no_port = PARSER.OFPMatch()
    no_port.set_dl_src(b"\x00" * 6)
    assert ofconv.in_port_of(old) == 7 and ofconv.in_port_of(no_port) is None
    assert ofconv.in_port_of(PARSER.OFPMatch(eth_type=0x800, in_port=3)) == 3
    assert ofconv.in_port_of(PARSER15.OFPMatch()) is None
    buf = bytearray()
    PARSER15.OFPMatch(eth_type=0x800, in_port=9).serialize(buf, 0)
    assert ofconv.in_port_of(PARSER15.OFPMatch.parser(bytes(buf), 0)) == 9


def test_rule_rows_read_openflow_13_and_15_rows_alike():
    (rule, age), = ofstats.rule_rows(OFP, [rule_row(5, 1, 2, hard=10, secs=3)])
    assert (rule.cookie, rule.hard_timeout, rule.outputs(), age) == (5, 10, (2,), 3.0)
    row15 = PARSER15.OFPFlowDesc(
        table_id=0, priority=10, idle_timeout=0, hard_timeout=10, flags=1, importance=0,
        cookie=5, match=PARSER15.OFPMatch(in_port=1),
        stats=PARSER15.OFPStats(duration=(3, 500_000_000), packet_count=4),
        instructions=[PARSER15.OFPInstructionActions(OFP15.OFPIT_APPLY_ACTIONS,
                                                     [PARSER15.OFPActionOutput(2)])])
    (rule15, age15), = ofstats.rule_rows(OFP15, [row15])
    assert rule15 == rule and age15 == 3.5


def test_a_bridge_connecting_again_loses_every_rule_once_its_switch_is_translated():
    shim, dp, ldp, _ = shim_with([1, 2, 3])
    again = Bridge(1, [1, 2, 3])  # the same switch, a new connection (or a restarted shim)
    shim.phys[1] = again
    shim._role_changed(SimpleNamespace(datapath=again, role=Role.MASTER, released=()))
    assert again.sent[0].cookie_mask == tr.COOKIE_MASK  # direct: the apps' rules are its table
    answer_rules(shim, again, [rule_row(5, 1, 2)])
    shim.adopt(shim.map.logical(1))
    last = Bridge(1, [1, 2, 3])
    shim.phys[1] = last
    shim._role_changed(SimpleNamespace(datapath=last, role=Role.MASTER, released=()))
    wipe, *copies = last.sent  # translated: an app rule left there (an adoption a crash cut
    assert wipe.command == OFP.OFPFC_DELETE and wipe.cookie_mask == 0  # short) goes too
    assert [tr.serial_of(m.cookie) is not None for m in copies] == [True]
    assert 1 not in shim.direct


def test_a_hidden_bridge_is_connected_but_never_mapped_nor_shown_to_apps():
    shim, _, _, got = shim_with([1, 2])
    shim.hidden = frozenset({0x30})
    t0 = Bridge(0x30, [1, 2, 3])
    shim.phys[0x30] = t0
    shim._role_changed(SimpleNamespace(datapath=t0, role=Role.MASTER, released=()))
    assert 0x30 not in shim.map.switches and 0x30 not in shim.ready and 0x30 not in shim.direct
    assert got == [] and t0.sent == []  # nothing said to the apps, nothing deleted on the bridge
    assert shim.phys[0x30] is t0  # still there for the app that programs it
