"""`hypervisor.slicing`: what each tenant request becomes on the switch, and whose each switch
message is, on one fixed set of slices and on random ones (hypothesis).

Every message the slicer builds goes through the wire: flow mods and errors are serialised and
parsed by the platform. The platform serialises PACKET_OUT but has no parser for it, and parses
the switch's messages (PACKET_IN, multipart replies) but cannot serialise them, so those are
decoded or encoded here by hand from the OpenFlow 1.3 layouts (the platform's OFPMatch,
OFPAction and OFPInstruction do their own parts).
"""
from __future__ import annotations

import struct
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.slicing import (MARKER_COOKIE_MASK, MARKER_COOKIE_PREFIX, ConfigError, Refused,
                                Slice, Slicer, error_msg)
from sdnmig import compat

OFP = compat.ofproto_v1_3
P = compat.ofproto_v1_3_parser
DP = compat.protocol(OFP.OFP_VERSION)
S1, S2 = 1, 2
PRESENT = OFP.OFPVID_PRESENT
NO_BUFFER = OFP.OFP_NO_BUFFER
# On S1: red (no VLAN) has 1, 2, 8; blue (VLAN 10) has access 3, 4; green (VLAN 20) has access
# 5; both share trunk 7; port 6 is nobody's. On S2: blue's trunk 1, grey's access 2.
SLICES = [
    Slice("red", {S1: frozenset({1, 2, 8})}),
    Slice("blue", {S1: frozenset({3, 4})}, vlan=10,
          trunks={S1: frozenset({7}), S2: frozenset({1})}),
    Slice("green", {S1: frozenset({5})}, vlan=20, trunks={S1: frozenset({7})}),
    Slice("grey", {S2: frozenset({2})}),
]
ETH_DST = "00:00:00:00:00:b2"
SPECIAL = {OFP.OFPP_CONTROLLER: "ctl", OFP.OFPP_IN_PORT: "in_port", OFP.OFPP_TABLE: "table",
           OFP.OFPP_FLOOD: "flood", OFP.OFPP_ALL: "all", OFP.OFPP_LOCAL: "local",
           OFP.OFPP_NORMAL: "normal", OFP.OFPP_ANY: "any"}


@pytest.fixture
def slicer() -> Slicer:
    return Slicer(SLICES)


# -- building, the wire, and reading actions ------------------------------------------------------

def out(port: int, max_len: int = 0) -> Any:
    return P.OFPActionOutput(port, max_len)


def apply(*actions: Any) -> Any:
    return P.OFPInstructionActions(OFP.OFPIT_APPLY_ACTIONS, list(actions))


def write(*actions: Any) -> Any:
    return P.OFPInstructionActions(OFP.OFPIT_WRITE_ACTIONS, list(actions))


def flow(*insts: Any, match: Optional[Any] = None, **kw: Any) -> Any:
    fields = dict(cookie=0x11, priority=100, buffer_id=NO_BUFFER, out_port=OFP.OFPP_ANY,
                  out_group=OFP.OFPG_ANY)
    fields.update(kw)
    fm = P.OFPFlowMod(DP, match=match if match is not None else P.OFPMatch(),
                      instructions=list(insts), **fields)
    fm.xid = 0x77
    return fm


def packet_out(in_port: int, *actions: Any, buffer_id: int = NO_BUFFER) -> Any:
    po = P.OFPPacketOut(DP, buffer_id=buffer_id, in_port=in_port, actions=list(actions),
                        data=frame())
    po.xid = 0x78
    return po


def frame(vid: Optional[int] = None, pcp: int = 0, size: int = 60) -> bytes:
    """An Ethernet frame (IPv4 ethertype, zero payload), 802.1Q-tagged if vid is given."""
    head = bytes.fromhex("0000000000b2" "0000000000a1")
    tag = struct.pack("!HH", 0x8100, pcp << 13 | vid) if vid is not None else b""
    body = struct.pack("!H", 0x0800) + bytes(size - 14)
    return head + tag + body


def wire(msg: Any) -> bytes:
    msg.serialize()
    return bytes(msg.buf)


def reparse(msg: Any) -> Any:
    back = compat.parse(OFP.OFP_VERSION, wire(msg))
    assert back is not None and type(back) is type(msg)
    return back


def header(msg_type: int, body: bytes, xid: int) -> bytes:
    return struct.pack("!BBHI", OFP.OFP_VERSION, msg_type, 8 + len(body), xid) + body


def match_bytes(match: Any) -> bytes:
    buf = bytearray()
    match.serialize(buf, 0)
    return bytes(buf)


def decode_packet_out(data: bytes) -> Dict[str, Any]:
    """PACKET_OUT from the OpenFlow 1.3 layout (the platform parses no PACKET_OUT)."""
    _, msg_type, length, xid = struct.unpack_from("!BBHI", data)
    assert msg_type == OFP.OFPT_PACKET_OUT and length == len(data)
    buffer_id, in_port, actions_len = struct.unpack_from("!IIH6x", data, 8)
    offset, end, actions = 24, 24 + actions_len, []
    while offset < end:
        action = P.OFPAction.parser(data, offset)
        actions.append(action)
        offset += action.len
    return {"xid": xid, "buffer_id": buffer_id, "in_port": in_port, "actions": actions,
            "data": data[end:]}


def encode_packet_in(msg: Any) -> bytes:
    """PACKET_IN in the OpenFlow 1.3 layout (the platform serialises no PACKET_IN)."""
    body = struct.pack("!IHBBQ", msg.buffer_id, msg.total_len, msg.reason, msg.table_id,
                       msg.cookie) + match_bytes(msg.match) + bytes(2) + msg.data
    return header(OFP.OFPT_PACKET_IN, body, msg.xid)


def from_switch_packet_in(in_port: Optional[int], data: bytes, xid: int = 0x99) -> Any:
    match = P.OFPMatch(in_port=in_port) if in_port is not None else P.OFPMatch()
    msg = P.OFPPacketIn(DP, buffer_id=NO_BUFFER, total_len=len(data), reason=OFP.OFPR_ACTION,
                        table_id=3, cookie=0x42, match=match, data=data)
    msg.xid = xid
    return compat.parse(OFP.OFP_VERSION, encode_packet_in(msg))


def encode_reply(msg: Any) -> bytes:
    """A multipart reply (port desc, port stats, flow stats) in the OpenFlow 1.3 layout."""
    body = b""
    for row in msg.body:
        if msg.type == OFP.OFPMP_PORT_DESC:
            body += struct.pack(OFP.OFP_PORT_PACK_STR, row.port_no,
                                bytes.fromhex(row.hw_addr.replace(":", "")), row.name,
                                *row[3:])
        elif msg.type == OFP.OFPMP_PORT_STATS:
            body += struct.pack(OFP.OFP_PORT_STATS_PACK_STR, *row)
        else:
            tail = bytearray(match_bytes(row.match))
            for inst in row.instructions:
                inst.serialize(tail, len(tail))
            body += struct.pack(OFP.OFP_FLOW_STATS_0_PACK_STR, 48 + len(tail), row.table_id,
                                row.duration_sec, row.duration_nsec, row.priority,
                                row.idle_timeout, row.hard_timeout, row.flags, row.cookie,
                                row.packet_count, row.byte_count) + bytes(tail)
    return header(OFP.OFPT_MULTIPART_REPLY, struct.pack("!HH4x", msg.type, msg.flags) + body,
                  msg.xid)


def through_wire(reply: Any) -> Any:
    back = compat.parse(OFP.OFP_VERSION, encode_reply(reply))
    assert type(back) is type(reply) and (back.xid, back.flags) == (reply.xid, reply.flags)
    return back


def show(actions: Sequence[Any]) -> List[str]:
    """Actions as short words: a port number, ctl/in_port/table, push, vid:N, pop, key=value."""
    words = []
    for a in actions:
        if isinstance(a, P.OFPActionOutput):
            words.append(SPECIAL.get(a.port, str(a.port)))
        elif isinstance(a, P.OFPActionPushVlan):
            words.append("push" if a.ethertype == 0x8100 else f"push:{a.ethertype:#x}")
        elif isinstance(a, P.OFPActionPopVlan):
            words.append("pop")
        elif isinstance(a, P.OFPActionSetField) and a.key == "vlan_vid":
            assert a.value & PRESENT
            words.append(f"vid:{a.value & 0xFFF}")
        elif isinstance(a, P.OFPActionSetField):
            words.append(f"{a.key}={a.value}")
        else:
            words.append(type(a).__name__)
    return words


FLOW_MOD_FIELDS = ("xid", "cookie", "cookie_mask", "table_id", "command", "idle_timeout",
                   "hard_timeout", "priority", "buffer_id", "out_port", "out_group", "flags")


def summary(fm: Any) -> Tuple[Any, ...]:
    """A flow mod's fields, match and instructions (actions as words), to compare."""
    insts = [(type(i).__name__, getattr(i, "type", None),
              show(i.actions) if hasattr(i, "actions") else
              [getattr(i, k, None) for k in ("table_id", "metadata", "metadata_mask", "meter_id")])
             for i in fm.instructions]
    return tuple(getattr(fm, f) for f in FLOW_MOD_FIELDS), dict(fm.match.items()), insts


def narrow(slicer: Slicer, tenant: str, fm: Any, dpid: int = S1) -> List[Any]:
    """The slicer's flow mods, each after a serialise/parse round trip (checked unchanged)."""
    got = slicer.flow_mod(tenant, dpid, fm)
    back = [reparse(m) for m in got]
    assert [summary(b) for b in back] == [summary(m) for m in got]
    return back


def apply_words(fm: Any) -> List[str]:
    (inst,) = [i for i in fm.instructions if getattr(i, "type", None) == OFP.OFPIT_APPLY_ACTIONS]
    return show(inst.actions)


def by_in_port(fms: Sequence[Any]) -> Dict[int, Any]:
    return {fm.match["in_port"]: fm for fm in fms}


@contextmanager
def refused(type_: int, code: int) -> Iterator[None]:
    """Like pytest.raises(Refused), for a refusal with this OpenFlow error type and code."""
    with pytest.raises(Refused) as info:
        yield
    assert (info.value.type, info.value.code) == (type_, code), info.value.reason
    assert info.value.reason


# -- configuration -----------------------------------------------------------------------------

def test_the_slices_are_indexed_per_switch(slicer):
    assert slicer.ports("red", S1) == {1, 2, 8}
    assert slicer.ports("blue", S1) == {3, 4, 7} and slicer.ports("blue", S2) == {1}
    assert slicer.ports("grey", S1) == frozenset()
    assert slicer.tenants_on(S1) == ["blue", "green", "red"]
    assert slicer.tenants_on(S2) == ["blue", "grey"] and slicer.tenants_on(9) == []
    with pytest.raises(KeyError):
        slicer.ports("nobody", S1)


@pytest.mark.parametrize("slices,words", [
    ([Slice("a", {1: {1}}), Slice("a", {1: {2}})], "name is used"),
    ([Slice("a", {1: {1}}), Slice("b", {1: {1}})], "already an access port of 'a'"),
    ([Slice("a", {1: {1}}), Slice("b", {}, vlan=5, trunks={1: {1}})], "is a trunk of 'b'"),
    ([Slice("b", {}, vlan=5, trunks={1: {1}}), Slice("a", {1: {1}})], "is a trunk of 'b'"),
    ([Slice("a", {1: {1}}, vlan=5, trunks={1: {1}})], "is a trunk of 'a'"),
    ([Slice("a", {}, vlan=5, trunks={1: {1}}), Slice("b", {}, vlan=5, trunks={1: {1}})],
     "already carries vlan 5 for 'a'"),
    ([Slice("a", {1: {1}}, trunks={1: {2}})], "trunks need a vlan"),
    ([Slice("a", {1: {1}}, vlan=0)], "not in 1..4094"),
    ([Slice("a", {1: {1}}, vlan=4095)], "not in 1..4094"),
    ([Slice("a", {1: {1}}, vlan=True)], "not in 1..4094"),
    ([Slice("a", {1: {0}})], "not a physical port"),
    ([Slice("a", {1: {OFP.OFPP_LOCAL}})], "not a physical port"),
    ([Slice("a", {-1: {1}})], "dpid -1"),
    ([Slice("", {1: {1}})], "non-empty"),
])
def test_slices_that_cannot_be_enforced_are_refused(slices, words):
    with pytest.raises(ConfigError, match=words):
        Slicer(slices)


def test_a_trunk_is_shared_by_vlan_slices_of_different_vlans():
    s = Slicer([Slice("a", {}, vlan=5, trunks={1: {1}}), Slice("b", {}, vlan=6, trunks={1: {1}})])
    assert s.tenants_on(1) == ["a", "b"]


def test_a_slice_takes_lists_and_keeps_frozensets():
    s = Slice("a", {1: [1, 2]})
    assert s.ports == {1: frozenset({1, 2})} and s.trunks == {}
    with pytest.raises(ConfigError, match="ports"):
        Slice("a", [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ports"):
        Slice("a", {1: 3})  # type: ignore[dict-item]


def test_from_config_reads_json_dicts_with_string_dpids():
    s = Slicer.from_config([
        {"tenant": "t1", "ports": {"1": [1, 2]}, "vlan": 10, "trunks": {"0x1a": [3]}},
        {"tenant": "t2", "ports": {2: [1]}},
        {"tenant": "t3", "ports": {" 26 ": [4]}, "vlan": None},
    ])
    assert s.ports("t1", 1) == {1, 2} and s.ports("t1", 0x1A) == {3}
    assert s.ports("t2", 2) == {1} and s.ports("t3", 26) == {4}


@pytest.mark.parametrize("config,words", [
    ({"tenant": "t"}, "expected a list"),
    ([["t"]], r"slices\[0\]: expected an object"),
    ([{"ports": {}}], r"slices\[0\].tenant"),
    ([{"tenant": 3}], r"slices\[0\].tenant"),
    ([{"tenant": "t", "port": {}}], "unknown field.*port"),
    ([{"tenant": "t", "ports": [1]}], r"\('t'\).ports: expected an object"),
    ([{"tenant": "t", "ports": {"x1": [1]}}], r"ports: dpid 'x1'"),
    ([{"tenant": "t", "ports": {"0xZZ": [1]}}], r"ports: dpid '0xZZ'"),
    ([{"tenant": "t", "ports": {"1": 1}}], r"ports\['1'\]: expected a list"),
    ([{"tenant": "t", "ports": {"1": ["1"]}}], r"ports\['1'\]: expected a list"),
    ([{"tenant": "t", "ports": {"1": [1], "0x1": [2]}}], "given twice"),
    ([{"tenant": "t", "ports": {"1": [1]}, "vlan": "10"}], r"\.vlan"),
    ([{"tenant": "t", "ports": {}, "vlan": 5, "trunks": {"1": [[3]]}}], "trunks"),
    ([{"tenant": "t", "ports": {"1": [0]}}], r"ports\[1\]: port 0"),
])
def test_from_config_names_the_bad_field(config, words):
    with pytest.raises(ConfigError, match=words):
        Slicer.from_config(config)


# -- flow mods: narrowing ----------------------------------------------------------------------

def test_a_flow_without_in_port_becomes_one_per_slice_port_with_every_field_kept(slicer):
    fm = flow(apply(out(OFP.OFPP_FLOOD)), match=P.OFPMatch(eth_dst=ETH_DST), cookie=0x1234,
              cookie_mask=0xFF, priority=7, idle_timeout=30, hard_timeout=60, table_id=2,
              flags=OFP.OFPFF_SEND_FLOW_REM, out_port=OFP.OFPP_ANY, out_group=OFP.OFPG_ANY)
    got = narrow(slicer, "red", fm)
    assert [m.match["in_port"] for m in got] == [1, 2, 8]
    for m in got:
        assert (m.cookie, m.cookie_mask, m.priority, m.idle_timeout, m.hard_timeout, m.table_id,
                m.command, m.flags, m.out_port, m.out_group, m.buffer_id, m.xid) == (
            0x1234, 0xFF, 7, 30, 60, 2, OFP.OFPFC_ADD, OFP.OFPFF_SEND_FLOW_REM, OFP.OFPP_ANY,
            OFP.OFPG_ANY, NO_BUFFER, 0x77)
        assert m.match["eth_dst"] == ETH_DST and "vlan_vid" not in m.match
    assert {p: apply_words(m) for p, m in by_in_port(got).items()} == {
        1: ["2", "8"], 2: ["1", "8"], 8: ["1", "2"]}


def test_a_vlan_slice_pins_access_copies_untagged_and_trunk_copies_to_its_vlan(slicer):
    got = by_in_port(narrow(slicer, "blue", flow(apply(out(4)))))
    assert sorted(got) == [3, 4, 7]
    assert got[3].match["vlan_vid"] == OFP.OFPVID_NONE == got[4].match["vlan_vid"]
    assert got[7].match["vlan_vid"] == 10 | PRESENT
    (on_s2,) = narrow(slicer, "blue", flow(apply(out(1))), dpid=S2)
    assert (on_s2.match["in_port"], on_s2.match["vlan_vid"]) == (1, 10 | PRESENT)
    assert apply_words(on_s2) == ["1"]


def test_a_named_in_port_of_the_slice_keeps_one_copy(slicer):
    (got,) = narrow(slicer, "green", flow(apply(out(7)), match=P.OFPMatch(in_port=7)))
    assert (got.match["in_port"], got.match["vlan_vid"]) == (7, 20 | PRESENT)
    assert apply_words(got) == ["7"]
    (got,) = narrow(slicer, "green", flow(apply(out(7)), match=P.OFPMatch(in_port=5)))
    assert got.match["vlan_vid"] == OFP.OFPVID_NONE
    assert apply_words(got) == ["push", "vid:20", "7", "pop"]


@pytest.mark.parametrize("tenant,in_port", [("red", 3), ("red", 6), ("red", 7), ("blue", 5),
                                            ("blue", OFP.OFPP_LOCAL),
                                            ("blue", OFP.OFPP_CONTROLLER)])
def test_a_match_on_an_in_port_outside_the_slice_is_refused(slicer, tenant, in_port):
    with refused(OFP.OFPET_BAD_MATCH, OFP.OFPBMC_BAD_VALUE):
        slicer.flow_mod(tenant, S1, flow(apply(), match=P.OFPMatch(in_port=in_port)))


def test_the_tag_is_pushed_before_trunks_and_popped_before_access_ports_along_the_list(slicer):
    fm = flow(apply(out(7), out(4), out(OFP.OFPP_CONTROLLER, 128),
                    P.OFPActionSetField(eth_dst=ETH_DST), out(7), out(3)),
              P.OFPInstructionGotoTable(1))
    got = by_in_port(narrow(slicer, "blue", fm))
    # from an access port: untagged; it ends untagged again for table 1
    assert apply_words(got[3]) == ["push", "vid:10", "7", "pop", "4", "ctl", f"eth_dst={ETH_DST}",
                                   "push", "vid:10", "7", "pop", "3"]
    assert apply_words(got[4]) == apply_words(got[3])
    # from the trunk: tagged; CONTROLLER gets it tagged, as packet_in expects from a trunk
    assert apply_words(got[7]) == ["7", "pop", "4", "push", "vid:10", "ctl",
                                   f"eth_dst={ETH_DST}", "7", "pop", "3", "push", "vid:10"]
    assert [type(i).__name__ for i in got[7].instructions] == [
        "OFPInstructionActions", "OFPInstructionGotoTable"]


def test_controller_output_asks_for_the_whole_packet(slicer):
    (got,) = narrow(slicer, "red", flow(apply(out(OFP.OFPP_CONTROLLER, 128), out(2, 64)),
                                        match=P.OFPMatch(in_port=1)))
    ctl, two = got.instructions[0].actions
    assert (ctl.port, ctl.max_len) == (OFP.OFPP_CONTROLLER, OFP.OFPCML_NO_BUFFER)
    assert (two.port, two.max_len) == (2, 64)


@pytest.mark.parametrize("port", [OFP.OFPP_FLOOD, OFP.OFPP_ALL])
def test_flood_and_all_become_every_other_slice_port(slicer, port):
    red = by_in_port(narrow(slicer, "red", flow(apply(out(port)))))
    assert apply_words(red[2]) == ["1", "8"]
    blue = by_in_port(narrow(slicer, "blue", flow(apply(out(port)))))
    assert apply_words(blue[3]) == ["4", "push", "vid:10", "7", "pop"]
    assert apply_words(blue[4]) == ["3", "push", "vid:10", "7", "pop"]
    assert apply_words(blue[7]) == ["pop", "3", "4", "push", "vid:10"]
    (grey,) = narrow(slicer, "grey", flow(apply(out(port))), dpid=S2)
    assert apply_words(grey) == []


def test_in_port_output_stays_with_the_tag_the_in_port_carries(slicer):
    got = by_in_port(narrow(slicer, "blue", flow(apply(out(7), out(OFP.OFPP_IN_PORT)))))
    assert apply_words(got[3]) == ["push", "vid:10", "7", "pop", "in_port"]
    assert apply_words(got[7]) == ["7", "in_port"]


def test_other_actions_and_instructions_pass_unchanged(slicer):
    meta = P.OFPInstructionWriteMetadata(0x5, 0xF)
    fm = flow(P.OFPInstructionMeter(3), apply(P.OFPActionDecNwTtl(), out(2)),
              P.OFPInstructionActions(OFP.OFPIT_CLEAR_ACTIONS, []), write(out(8)), meta,
              P.OFPInstructionGotoTable(4), match=P.OFPMatch(in_port=1, eth_type=0x0800))
    (got,) = narrow(slicer, "red", fm)
    kinds = [(type(i).__name__, getattr(i, "type", None)) for i in got.instructions]
    assert kinds == [(type(i).__name__, getattr(i, "type", None)) for i in fm.instructions]
    assert got.instructions[0].meter_id == 3
    assert show(got.instructions[1].actions) == ["OFPActionDecNwTtl", "2"]
    assert show(got.instructions[3].actions) == ["8"]
    assert (got.instructions[4].metadata, got.instructions[4].metadata_mask) == (0x5, 0xF)
    assert got.instructions[5].table_id == 4 and got.match["eth_type"] == 0x0800


def test_a_non_vlan_slice_may_use_vlans_itself(slicer):
    fm = flow(apply(P.OFPActionPushVlan(0x8100), P.OFPActionSetField(vlan_vid=5 | PRESENT),
                    P.OFPActionSetField(vlan_pcp=3), out(2), P.OFPActionPopVlan()),
              match=P.OFPMatch(in_port=1, vlan_vid=OFP.OFPVID_NONE))
    (got,) = narrow(slicer, "red", fm)
    assert apply_words(got) == ["push", "vid:5", "vlan_pcp=3", "2", "pop"]
    assert got.match["vlan_vid"] == OFP.OFPVID_NONE


# -- flow mods: write-actions (an action set) --------------------------------------------------

def test_write_actions_to_ports_tagged_like_the_in_port_are_narrowed(slicer):
    got = by_in_port(narrow(slicer, "blue", flow(write(out(OFP.OFPP_CONTROLLER)))))
    assert {p: show(m.instructions[0].actions) for p, m in got.items()} == {
        3: ["ctl"], 4: ["ctl"], 7: ["ctl"]}
    (got,) = narrow(slicer, "blue", flow(write(out(4)), match=P.OFPMatch(in_port=3)))
    assert show(got.instructions[0].actions) == ["4"]


def test_write_actions_needing_a_tag_change_are_refused(slicer):
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_UNSUPPORTED_ORDER):
        slicer.flow_mod("blue", S1, flow(write(out(7)), match=P.OFPMatch(in_port=3)))


def test_write_actions_flooding_to_several_ports_are_refused(slicer):
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_TOO_MANY):
        slicer.flow_mod("red", S1, flow(write(out(OFP.OFPP_FLOOD)), match=P.OFPMatch(in_port=1)))


# -- flow mods: refusals -----------------------------------------------------------------------

@pytest.mark.parametrize("port", [6, 3, 7, 5, OFP.OFPP_LOCAL, OFP.OFPP_NORMAL, OFP.OFPP_TABLE,
                                  OFP.OFPP_ANY, 0])
def test_outputs_outside_the_slice_are_refused(slicer, port):
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_OUT_PORT):
        slicer.flow_mod("red", S1, flow(apply(out(2), out(port))))


def test_group_actions_are_refused(slicer):
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_OUT_GROUP):
        slicer.flow_mod("red", S1, flow(apply(P.OFPActionGroup(1))))


def test_experimenter_actions_are_refused(slicer):
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_EXPERIMENTER):
        slicer.flow_mod("red", S1, flow(apply(P.NXActionResubmitTable(in_port=3, table_id=0))))


@pytest.mark.parametrize("tenant", ["red", "blue"])
def test_setting_the_in_port_is_refused(slicer, tenant):
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_SET_TYPE):
        slicer.flow_mod(tenant, S1, flow(apply(P.OFPActionSetField(in_port=5),
                                               out(OFP.OFPP_IN_PORT))))


@pytest.mark.parametrize("action", [
    P.OFPActionPushVlan(0x8100), P.OFPActionPushVlan(0x88A8), P.OFPActionPopVlan(),
    P.OFPActionSetField(vlan_vid=20 | PRESENT), P.OFPActionSetField(vlan_pcp=1),
    P.OFPActionPushPbb(0x88E7), P.OFPActionPopPbb(),
], ids=lambda a: show([a])[0])
def test_a_vlan_slice_may_not_touch_tags(slicer, action):
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_SET_TYPE):
        slicer.flow_mod("blue", S1, flow(apply(action, out(4))))
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_SET_TYPE):
        slicer.packet_out("blue", S1, packet_out(3, action, out(4)))


@pytest.mark.parametrize("match", [P.OFPMatch(vlan_vid=20 | PRESENT),
                                   P.OFPMatch(vlan_vid=OFP.OFPVID_NONE),
                                   P.OFPMatch(vlan_vid=(PRESENT, PRESENT)),
                                   P.OFPMatch(in_port=3, vlan_pcp=2)])
def test_a_vlan_slice_may_not_match_tags(slicer, match):
    with refused(OFP.OFPET_BAD_MATCH, OFP.OFPBMC_BAD_FIELD):
        slicer.flow_mod("blue", S1, flow(apply(), match=match))


@pytest.mark.parametrize("tenant,dpid", [("red", S2), ("grey", S1), ("blue", 99)])
def test_a_switch_without_a_port_of_the_slice_is_refused(slicer, tenant, dpid):
    with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM):
        slicer.flow_mod(tenant, dpid, flow(apply()))
    with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM):
        slicer.packet_out(tenant, dpid, packet_out(OFP.OFPP_CONTROLLER))
    with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM):
        slicer.multipart_request(tenant, dpid, P.OFPDescStatsRequest(DP, 0))
    with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM):
        slicer.check(tenant, dpid, P.OFPPortMod(DP, port_no=1))


def test_an_unknown_tenant_is_the_callers_error(slicer):
    with pytest.raises(KeyError):
        slicer.flow_mod("nobody", S1, flow(apply()))


def test_a_flow_mod_naming_a_switch_buffer_is_refused(slicer):
    with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_BUFFER_UNKNOWN):
        slicer.flow_mod("red", S1, flow(apply(out(2)), buffer_id=0x10))


def test_an_unknown_instruction_is_refused(slicer):
    class Odd(P.OFPInstructionGotoTable.__bases__[0]):   # the platform's OFPInstruction
        pass
    with refused(OFP.OFPET_BAD_INSTRUCTION, OFP.OFPBIC_UNKNOWN_INST):
        slicer.flow_mod("red", S1, flow(Odd()))


# -- flow mods: the hypervisor's cookies -------------------------------------------------------

MARK = MARKER_COOKIE_PREFIX | 0x1234


@pytest.mark.parametrize("command", [OFP.OFPFC_ADD, OFP.OFPFC_MODIFY, OFP.OFPFC_MODIFY_STRICT])
def test_adding_or_modifying_with_a_marker_cookie_is_refused(slicer, command):
    with refused(OFP.OFPET_FLOW_MOD_FAILED, OFP.OFPFMFC_EPERM):
        slicer.flow_mod("red", S1, flow(apply(out(2)), command=command, cookie=MARK))


@pytest.mark.parametrize("command", [OFP.OFPFC_DELETE, OFP.OFPFC_DELETE_STRICT,
                                     OFP.OFPFC_MODIFY])
@pytest.mark.parametrize("cookie,mask,refuse", [
    (MARKER_COOKIE_PREFIX, MARKER_COOKIE_MASK, True),
    (MARK, (1 << 64) - 1, True),
    (MARK, MARKER_COOKIE_MASK | 0xFF, True),
    (MARK, 0, False),                               # no cookie filter: narrowing keeps it safe
    (0x1234, MARKER_COOKIE_MASK, False),            # selects cookies of another prefix
    (MARK, 0xF0000000_00000000, False),             # does not cover the whole prefix
])
def test_a_cookie_filter_selecting_the_marker_prefix_is_refused(slicer, command, cookie, mask,
                                                                refuse):
    fm = flow(command=command, cookie=cookie, cookie_mask=mask, table_id=OFP.OFPTT_ALL)
    if command == OFP.OFPFC_MODIFY and cookie == MARK:
        refuse = True   # a modify may also write its cookie
    if refuse:
        with refused(OFP.OFPET_FLOW_MOD_FAILED, OFP.OFPFMFC_EPERM):
            slicer.flow_mod("red", S1, fm)
    else:
        assert len(narrow(slicer, "red", fm)) == 3


# -- flow mods: deletes and modifies -----------------------------------------------------------

def test_a_tenants_delete_all_deletes_only_flows_in_its_slice(slicer):
    fm = flow(command=OFP.OFPFC_DELETE, table_id=OFP.OFPTT_ALL, cookie=0, priority=0)
    got = narrow(slicer, "blue", fm)
    assert [(m.match["in_port"], m.match["vlan_vid"]) for m in got] == [
        (3, OFP.OFPVID_NONE), (4, OFP.OFPVID_NONE), (7, 10 | PRESENT)]
    for m in got:
        assert (m.command, m.table_id, m.out_port, m.out_group, m.instructions) == (
            OFP.OFPFC_DELETE, OFP.OFPTT_ALL, OFP.OFPP_ANY, OFP.OFPG_ANY, [])
        assert dict(m.match.items()).keys() == {"in_port", "vlan_vid"}


def test_strict_deletes_and_modifies_are_narrowed_like_adds(slicer):
    match = P.OFPMatch(eth_dst=ETH_DST)
    added = narrow(slicer, "red", flow(apply(out(OFP.OFPP_FLOOD)), match=match, priority=9))
    strict = narrow(slicer, "red", flow(command=OFP.OFPFC_DELETE_STRICT, match=match,
                                        priority=9, out_port=2))
    assert [dict(m.match.items()) for m in strict] == [dict(m.match.items()) for m in added]
    assert all(m.out_port == 2 and m.priority == 9 for m in strict)
    modified = by_in_port(narrow(slicer, "red", flow(apply(out(OFP.OFPP_ALL)), match=match,
                                                     command=OFP.OFPFC_MODIFY_STRICT)))
    assert apply_words(modified[8]) == ["1", "2"] and modified[8].command == \
        OFP.OFPFC_MODIFY_STRICT


# -- packet-outs -------------------------------------------------------------------------------

def out_words(po: Any) -> List[str]:
    """The packet-out's actions after the wire, checking the rest came through."""
    got = decode_packet_out(wire(po))
    assert (got["xid"], got["buffer_id"], got["in_port"]) == (po.xid, NO_BUFFER, po.in_port)
    assert got["data"] == frame()
    return show(got["actions"])


def test_a_packet_out_from_the_controller_floods_the_slice_untagged_then_tagged(slicer):
    po = slicer.packet_out("blue", S1, packet_out(OFP.OFPP_CONTROLLER, out(OFP.OFPP_FLOOD)))
    assert out_words(po) == ["3", "4", "push", "vid:10", "7"]
    po = slicer.packet_out("red", S1, packet_out(OFP.OFPP_CONTROLLER, out(OFP.OFPP_ALL)))
    assert out_words(po) == ["1", "2", "8"]


def test_a_packet_out_floods_except_its_in_port(slicer):
    po = slicer.packet_out("blue", S1, packet_out(3, out(OFP.OFPP_FLOOD)))
    assert out_words(po) == ["4", "push", "vid:10", "7"]
    po = slicer.packet_out("blue", S1, packet_out(7, out(OFP.OFPP_FLOOD), out(7)))
    assert out_words(po) == ["3", "4", "push", "vid:10", "7"]


def test_a_packet_out_starts_untagged_even_from_a_trunk(slicer):
    po = slicer.packet_out("blue", S1, packet_out(7, out(4), out(OFP.OFPP_IN_PORT),
                                                  out(OFP.OFPP_CONTROLLER, 0), out(3)))
    assert out_words(po) == ["4", "push", "vid:10", "in_port", "ctl", "pop", "3"]
    (ctl,) = [a for a in po.actions if getattr(a, "port", None) == OFP.OFPP_CONTROLLER]
    assert ctl.max_len == OFP.OFPCML_NO_BUFFER


def test_a_packet_out_may_go_through_the_tables_as_if_it_came_in(slicer):
    po = slicer.packet_out("blue", S1, packet_out(7, out(OFP.OFPP_TABLE)))
    assert out_words(po) == ["push", "vid:10", "table"]
    po = slicer.packet_out("blue", S1, packet_out(OFP.OFPP_CONTROLLER, out(OFP.OFPP_TABLE)))
    assert out_words(po) == ["table"]


@pytest.mark.parametrize("port", [OFP.OFPP_CONTROLLER, OFP.OFPP_IN_PORT, 5, 6,
                                  OFP.OFPP_LOCAL, OFP.OFPP_NORMAL, OFP.OFPP_ANY])
def test_packet_out_outputs_nowhere_in_the_slice_are_refused(slicer, port):
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_OUT_PORT):
        slicer.packet_out("blue", S1, packet_out(OFP.OFPP_CONTROLLER, out(3), out(port)))


@pytest.mark.parametrize("in_port", [1, 5, 6, OFP.OFPP_LOCAL, OFP.OFPP_ANY])
def test_a_packet_out_from_a_port_outside_the_slice_is_refused(slicer, in_port):
    with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_BAD_PORT):
        slicer.packet_out("blue", S1, packet_out(in_port, out(3)))


def test_a_buffered_packet_out_is_refused(slicer):
    with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_BUFFER_UNKNOWN):
        slicer.packet_out("red", S1, packet_out(1, out(2), buffer_id=7))


def test_a_packet_out_refuses_groups(slicer):
    with refused(OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_OUT_GROUP):
        slicer.packet_out("red", S1, packet_out(1, P.OFPActionGroup(2)))


# -- packet-ins --------------------------------------------------------------------------------

@pytest.mark.parametrize("port,tenant", [(1, "red"), (8, "red"), (3, "blue"), (5, "green")])
def test_a_packet_in_from_an_access_port_is_its_slices_unchanged(slicer, port, tenant):
    pin = from_switch_packet_in(port, frame())
    assert slicer.packet_in(S1, pin) == (tenant, pin)


@pytest.mark.parametrize("dpid,port,vid,pcp,tenant", [
    (S1, 7, 10, 0, "blue"), (S1, 7, 20, 5, "green"), (S2, 1, 10, 7, "blue")])
def test_a_tagged_packet_in_from_a_trunk_reaches_its_vlans_tenant_untagged(slicer, dpid, port,
                                                                           vid, pcp, tenant):
    data = frame(vid, pcp)
    pin = from_switch_packet_in(port, data)
    assert pin.total_len == 64
    owner, got = slicer.packet_in(dpid, pin)
    assert owner == tenant
    assert got.data == frame() and got.total_len == 60 and got.msg_len == pin.msg_len - 4
    back = compat.parse(OFP.OFP_VERSION, encode_packet_in(got))
    assert (back.xid, back.buffer_id, back.total_len, back.reason, back.table_id, back.cookie) \
        == (0x99, NO_BUFFER, 60, OFP.OFPR_ACTION, 3, 0x42)
    assert back.match["in_port"] == port and back.data == frame()
    assert back.msg_len == got.msg_len


def test_a_truncated_tagged_packet_in_loses_the_tag_too(slicer):
    pin = from_switch_packet_in(7, frame(20)[:40])
    pin.total_len = 64
    tenant, got = slicer.packet_in(S1, pin)
    assert tenant == "green" and got.data == frame()[:36] and got.total_len == 60


@pytest.mark.parametrize("dpid,port,data", [
    (S1, 7, frame()),            # untagged on a trunk
    (S1, 7, frame(30)),          # a VLAN no slice has there
    (S2, 1, frame(20)),          # green's VLAN, but S2's trunk is blue's alone
    (S1, 7, frame(10)[:17]),     # too short to hold a tag
    (S1, 6, frame()),            # nobody's port
    (S1, 6, frame(10)),
    (S1, None, frame()),         # no in_port
    (S2, 3, frame()),
    (9, 1, frame()),             # unknown switch
])
def test_packet_ins_of_nobody_are_dropped(slicer, dpid, port, data):
    assert slicer.packet_in(dpid, from_switch_packet_in(port, data)) is None


# -- flow-removed and port status --------------------------------------------------------------

def removed(match: Any, cookie: int = 0x11) -> Any:
    return P.OFPFlowRemoved(DP, cookie=cookie, priority=1, reason=OFP.OFPRR_DELETE, table_id=0,
                            duration_sec=1, duration_nsec=0, idle_timeout=0, hard_timeout=0,
                            packet_count=0, byte_count=0, match=match)


@pytest.mark.parametrize("dpid,fields,owner", [
    (S1, {"in_port": 1}, "red"),
    (S1, {"in_port": 3, "vlan_vid": OFP.OFPVID_NONE}, "blue"),
    (S1, {"in_port": 7, "vlan_vid": 10 | PRESENT}, "blue"),
    (S1, {"in_port": 7, "vlan_vid": 20 | PRESENT, "eth_dst": ETH_DST}, "green"),
    (S2, {"in_port": 1, "vlan_vid": 10 | PRESENT}, "blue"),
    (S1, {"in_port": 7}, None),
    (S1, {"in_port": 7, "vlan_vid": 30 | PRESENT}, None),
    (S1, {"in_port": 7, "vlan_vid": OFP.OFPVID_NONE}, None),
    (S1, {"in_port": 7, "vlan_vid": (10 | PRESENT, 0x1FF0)}, None),
    (S1, {"in_port": 6}, None),
    (S1, {"eth_dst": ETH_DST}, None),
    (S2, {"in_port": 8}, None),
])
def test_a_removed_flow_belongs_to_the_slice_of_its_in_port_and_vlan(slicer, dpid, fields,
                                                                     owner):
    assert slicer.flow_removed(dpid, removed(P.OFPMatch(**fields))) == owner


def test_the_hypervisors_marker_flows_are_nobodys(slicer):
    assert slicer.flow_removed(S1, removed(P.OFPMatch(in_port=1), cookie=MARK)) is None


def test_every_narrowed_flow_is_owned_by_its_tenant(slicer):
    for tenant, dpid in [("red", S1), ("blue", S1), ("green", S1), ("blue", S2), ("grey", S2)]:
        for fm in narrow(slicer, tenant, flow(apply(out(OFP.OFPP_FLOOD))), dpid=dpid):
            assert slicer.flow_removed(dpid, removed(fm.match)) == tenant


def port_desc(port: int) -> Any:
    return P.OFPPort(port_no=port, hw_addr=f"00:00:00:00:01:{port:02x}",
                     name=f"s1-eth{port}".encode(), config=0, state=0, curr=0x840,
                     advertised=0, supported=0, peer=0, curr_speed=10000000, max_speed=0)


@pytest.mark.parametrize("dpid,port,tenants", [
    (S1, 7, ["blue", "green"]), (S1, 1, ["red"]), (S1, 4, ["blue"]), (S1, 6, []),
    (S2, 1, ["blue"]), (S2, 2, ["grey"]), (9, 1, [])])
def test_port_status_goes_to_whoever_has_the_port(slicer, dpid, port, tenants):
    msg = P.OFPPortStatus(DP, reason=OFP.OFPPR_MODIFY, desc=port_desc(port))
    assert slicer.port_status(dpid, msg) == tenants


# -- multipart ---------------------------------------------------------------------------------

def switch_reply(cls: Any, body: List[Any], flags: int = 0) -> Any:
    """A reply as the platform parses it from the switch."""
    msg = cls(DP, flags=flags, body=body)
    msg.type, msg.xid = cls.cls_stats_type, 0x55
    return compat.parse(OFP.OFP_VERSION, encode_reply(msg))


def test_port_descriptions_show_only_the_slices_ports(slicer):
    reply = switch_reply(P.OFPPortDescStatsReply, [port_desc(p) for p in range(1, 9)],
                         flags=OFP.OFPMPF_REPLY_MORE)
    got = through_wire(slicer.port_desc_reply("blue", S1, reply))
    assert [p.port_no for p in got.body] == [3, 4, 7]
    assert got.body[2] == reply.body[6]
    assert [p.port_no for p in slicer.port_desc_reply("red", S1, reply).body] == [1, 2, 8]
    assert slicer.port_desc_reply("grey", S1, reply).body == []


def port_stats(port: int) -> Any:
    return P.OFPPortStats(port, *range(100, 112), 5, 6)


def test_port_stats_show_only_the_slices_ports(slicer):
    reply = switch_reply(P.OFPPortStatsReply, [port_stats(p) for p in (1, 3, 6, 7)])
    got = through_wire(slicer.port_stats_reply("green", S1, reply))
    assert [tuple(p) for p in got.body] == [tuple(port_stats(7))]
    assert [p.port_no for p in slicer.port_stats_reply("red", S1, reply).body] == [1]


@pytest.mark.parametrize("tenant,port,ok", [
    ("blue", 3, True), ("blue", 7, True), ("blue", OFP.OFPP_ANY, True), ("blue", 1, False),
    ("green", 4, False), ("red", 6, False), ("red", OFP.OFPP_LOCAL, False)])
def test_port_stats_requests_name_a_slice_port_or_any(slicer, tenant, port, ok):
    req = P.OFPPortStatsRequest(DP, 0, port)
    if ok:
        assert slicer.port_stats_request(tenant, S1, req) is req
        assert slicer.multipart_request(tenant, S1, req) is req
    else:
        for ask in (slicer.port_stats_request, slicer.multipart_request):
            with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM):
                ask(tenant, S1, req)


def test_only_desc_flow_and_port_requests_pass(slicer):
    allowed = [P.OFPDescStatsRequest(DP, 0), P.OFPPortDescStatsRequest(DP, 0),
               P.OFPFlowStatsRequest(DP, 0, match=P.OFPMatch(in_port=6)),
               P.OFPPortStatsRequest(DP, 0)]
    for req in allowed:
        assert slicer.multipart_request("red", S1, req) is req
    match = P.OFPMatch()
    for req in [P.OFPTableStatsRequest(DP, 0), P.OFPQueueStatsRequest(DP, 0),
                P.OFPAggregateStatsRequest(DP, 0, OFP.OFPTT_ALL, OFP.OFPP_ANY, OFP.OFPG_ANY, 0,
                                           0, match),
                P.OFPGroupStatsRequest(DP, 0), P.OFPGroupDescStatsRequest(DP, 0),
                P.OFPMeterStatsRequest(DP, 0), P.OFPMeterConfigStatsRequest(DP, 0),
                P.OFPTableFeaturesStatsRequest(DP, 0)]:
        with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_BAD_MULTIPART):
            slicer.multipart_request("red", S1, req)


@pytest.mark.parametrize("out_port,ok", [(OFP.OFPP_ANY, True), (7, True), (3, True),
                                         (OFP.OFPP_CONTROLLER, True), (5, False), (6, False),
                                         (OFP.OFPP_LOCAL, False)])
def test_flow_stats_requests_filter_only_by_the_slices_ports(slicer, out_port, ok):
    req = P.OFPFlowStatsRequest(DP, 0, out_port=out_port)
    if ok:
        assert slicer.multipart_request("blue", S1, req) is req
    else:
        with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM):
            slicer.multipart_request("blue", S1, req)


def stats_of(fm: Any) -> Any:
    return P.OFPFlowStats(table_id=fm.table_id, duration_sec=4, duration_nsec=5,
                          priority=fm.priority, idle_timeout=fm.idle_timeout,
                          hard_timeout=fm.hard_timeout, flags=fm.flags, cookie=fm.cookie,
                          packet_count=fm.match["in_port"], byte_count=64, match=fm.match,
                          instructions=fm.instructions)


def test_flow_stats_show_the_tenants_flows_as_it_wrote_them(slicer):
    tenant_flow = flow(apply(out(OFP.OFPP_FLOOD)), P.OFPInstructionGotoTable(2),
                       match=P.OFPMatch(eth_dst=ETH_DST))
    blue = narrow(slicer, "blue", tenant_flow)
    green = narrow(slicer, "green", tenant_flow)
    red = narrow(slicer, "red", tenant_flow)
    hypervisor = [flow(apply(out(OFP.OFPP_CONTROLLER))),
                  flow(apply(), match=P.OFPMatch(in_port=7, vlan_vid=10 | PRESENT), cookie=MARK)]
    rows = [stats_of(fm) for fm in red + blue + green] + [
        P.OFPFlowStats(table_id=0, duration_sec=0, duration_nsec=0, priority=0, idle_timeout=0,
                       hard_timeout=0, flags=0, cookie=fm.cookie, packet_count=0, byte_count=0,
                       match=fm.match, instructions=fm.instructions) for fm in hypervisor]
    reply = switch_reply(P.OFPFlowStatsReply, rows)
    got = through_wire(slicer.flow_stats_reply("blue", S1, reply))
    assert [r.match["in_port"] for r in got.body] == [3, 4, 7]
    for r in got.body:
        assert dict(r.match.items()) == {"in_port": r.packet_count, "eth_dst": ETH_DST}
        assert (r.cookie, r.priority, r.byte_count, r.duration_sec) == (0x11, 100, 64, 4)
        assert r.instructions[1].table_id == 2
    assert [show(r.instructions[0].actions) for r in got.body] == [
        ["4", "7"], ["3", "7"], ["3", "4"]]
    reds = slicer.flow_stats_reply("red", S1, reply).body
    assert [r.match["in_port"] for r in reds] == [1, 2, 8]
    assert [show(r.instructions[0].actions) for r in reds] == [["2", "8"], ["1", "8"], ["1", "2"]]
    greens = slicer.flow_stats_reply("green", S1, reply).body
    assert [r.match["in_port"] for r in greens] == [5, 7]
    assert slicer.flow_stats_reply("grey", S1, reply).body == []


# -- other modifications -----------------------------------------------------------------------

@pytest.mark.parametrize("msg", [P.OFPGroupMod(DP), P.OFPMeterMod(DP), P.OFPTableMod(DP, 0, 0)],
                         ids=lambda m: type(m).__name__)
def test_group_meter_and_table_mods_are_refused(slicer, msg):
    with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM):
        slicer.check("red", S1, msg)


@pytest.mark.parametrize("tenant,dpid,port,ok", [
    ("blue", S1, 3, True), ("blue", S2, 1, True), ("red", S1, 8, True),
    ("blue", S1, 1, False), ("blue", S1, 7, False), ("green", S1, 7, False),
    ("red", S1, 6, False), ("red", S1, OFP.OFPP_LOCAL, False)])
def test_port_mods_are_for_ports_of_the_slice_alone(slicer, tenant, dpid, port, ok):
    msg = P.OFPPortMod(DP, port_no=port, config=OFP.OFPPC_PORT_DOWN, mask=OFP.OFPPC_PORT_DOWN)
    if ok:
        assert slicer.check(tenant, dpid, msg) is None
    else:
        with refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM):
            slicer.check(tenant, dpid, msg)


def test_check_decides_only_the_modifications_it_names(slicer):
    with pytest.raises(ValueError, match="OFPFlowMod"):
        slicer.check("red", S1, flow())


# -- errors ------------------------------------------------------------------------------------

def test_a_refusal_becomes_the_tenants_error_with_the_requests_first_64_bytes(slicer):
    request = flow(apply(*[out(6)] * 8), match=P.OFPMatch(eth_dst=ETH_DST))
    raw = wire(request)
    assert len(raw) > 64
    with pytest.raises(Refused) as info:
        slicer.flow_mod("red", S1, request)
    err = reparse(error_msg(info.value, request.xid, raw))
    assert (err.type, err.code, err.xid, err.data) == (
        OFP.OFPET_BAD_ACTION, OFP.OFPBAC_BAD_OUT_PORT, 0x77, raw[:64])
    short = reparse(error_msg(Refused(OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM, "no"), 5, b"ab"))
    assert (short.type, short.code, short.xid, short.data) == (
        OFP.OFPET_BAD_REQUEST, OFP.OFPBRC_EPERM, 5, b"ab")


# -- random slices and flows -------------------------------------------------------------------

PORTS = range(1, 9)
VLANS = (10, 20, 30)
SPECIALS = (OFP.OFPP_FLOOD, OFP.OFPP_ALL, OFP.OFPP_IN_PORT, OFP.OFPP_CONTROLLER)


@st.composite
def random_slices(draw: Any) -> List[Slice]:
    """Up to three slices on switch 1 (ports 1..8): each port nobody's, one slice's access
    port, or a trunk of some VLAN slices."""
    n = draw(st.integers(1, 3))
    vlans = [VLANS[i] if draw(st.booleans()) else None for i in range(n)]
    access: Dict[int, set] = {i: set() for i in range(n)}
    trunks: Dict[int, set] = {i: set() for i in range(n)}
    vlan_slices = [i for i in range(n) if vlans[i] is not None]
    for port in PORTS:
        kind = draw(st.sampled_from(["none", "access", "trunk"] if vlan_slices else
                                    ["none", "access"]))
        if kind == "access":
            access[draw(st.integers(0, n - 1))].add(port)
        elif kind == "trunk":
            for i in draw(st.sets(st.sampled_from(vlan_slices), min_size=1)):
                trunks[i].add(port)
    return [Slice(f"t{i}", {1: frozenset(access[i])}, vlans[i],
                  {1: frozenset(trunks[i])} if vlans[i] is not None else {})
            for i in range(n)]


def random_actions() -> Any:
    action = st.one_of(st.sampled_from(PORTS).map(out), st.sampled_from(SPECIALS).map(out),
                       st.just(P.OFPActionSetField(eth_dst=ETH_DST)))
    return st.lists(action, max_size=6)


def expected_outputs(actions: List[Any], ports: frozenset, in_port: int) -> Optional[List[int]]:
    """The ports the narrowed actions must send to, in order; None: must be refused."""
    want: List[int] = []
    for a in actions:
        if not isinstance(a, P.OFPActionOutput):
            continue
        if a.port in (OFP.OFPP_FLOOD, OFP.OFPP_ALL):
            want += sorted(ports - {in_port})
        elif a.port in ports or (a.port in (OFP.OFPP_IN_PORT, OFP.OFPP_CONTROLLER)
                                 and in_port != OFP.OFPP_CONTROLLER):
            want.append(a.port)
        else:
            return None
    return want


def walk_tags(s: Slice, actions: List[Any], in_port: int, tagged: bool) -> bool:
    """Follow the tag along the actions; assert each output sees the tag its port carries."""
    trunks = s.trunks.get(1, frozenset())
    home = in_port in trunks
    for a in actions:
        if isinstance(a, P.OFPActionPushVlan):
            assert not tagged
            tagged = True
        elif isinstance(a, P.OFPActionPopVlan):
            assert tagged
            tagged = False
        elif isinstance(a, P.OFPActionSetField) and a.key == "vlan_vid":
            assert tagged and a.value == s.vlan | PRESENT
        elif isinstance(a, P.OFPActionOutput):
            if a.port in (OFP.OFPP_IN_PORT, OFP.OFPP_CONTROLLER):
                assert tagged == home, show(actions)
            else:
                assert tagged == (a.port in trunks), show(actions)
    return tagged


@settings(max_examples=150, deadline=None)
@given(slices=random_slices(), data=st.data())
def test_narrowed_flows_stay_in_their_slice_and_tag_right(slices, data):
    slicer = Slicer(slices)
    s = data.draw(st.sampled_from(slices))
    ports = s.ports.get(1, frozenset()) | s.trunks.get(1, frozenset())
    in_port = data.draw(st.one_of(st.none(), st.sampled_from(PORTS)))
    actions = data.draw(random_actions())
    goto = data.draw(st.booleans())
    fm = flow(apply(*actions), *([P.OFPInstructionGotoTable(1)] if goto else []),
              match=P.OFPMatch(in_port=in_port) if in_port is not None else P.OFPMatch())
    in_ports = sorted(ports) if in_port is None else [in_port]
    expected = {p: expected_outputs(actions, ports, p) for p in in_ports}
    must_refuse = not ports or (in_port is not None and in_port not in ports) or any(
        e is None for e in expected.values())
    try:
        got = narrow(slicer, s.tenant, fm)
    except Refused as err:
        assert must_refuse, err.reason
        return
    assert not must_refuse
    assert [m.match["in_port"] for m in got] == in_ports
    for m in got:
        p = m.match["in_port"]
        assert p in ports and slicer.flow_removed(1, removed(m.match)) == s.tenant
        acts = m.instructions[0].actions
        assert [a.port for a in acts if isinstance(a, P.OFPActionOutput)] == expected[p]
        if s.vlan is None:
            assert "vlan_vid" not in m.match
            assert not any(isinstance(a, (P.OFPActionPushVlan, P.OFPActionPopVlan)) for a in acts)
            continue
        home = p in s.trunks.get(1, frozenset())
        assert m.match["vlan_vid"] == (s.vlan | PRESENT if home else OFP.OFPVID_NONE)
        assert walk_tags(s, acts, p, home) == home  # the next table sees it as it came in


@settings(max_examples=100, deadline=None)
@given(slices=random_slices(), data=st.data())
def test_narrowed_packet_outs_stay_in_their_slice_and_tag_right(slices, data):
    slicer = Slicer(slices)
    s = data.draw(st.sampled_from(slices))
    ports = s.ports.get(1, frozenset()) | s.trunks.get(1, frozenset())
    in_port = data.draw(st.sampled_from([OFP.OFPP_CONTROLLER, *PORTS]))
    actions = data.draw(random_actions())
    expected = expected_outputs(actions, ports, in_port)
    must_refuse = not ports or expected is None or (
        in_port != OFP.OFPP_CONTROLLER and in_port not in ports)
    try:
        po = slicer.packet_out(s.tenant, 1, packet_out(in_port, *actions))
    except Refused as err:
        assert must_refuse, err.reason
        return
    assert not must_refuse
    acts = decode_packet_out(wire(po))["actions"]
    assert [a.port for a in acts if isinstance(a, P.OFPActionOutput)] == expected
    if s.vlan is not None:
        walk_tags(s, acts, in_port, False)
