"""The hypervisor's own half of OpenFlow 1.3, checked against the platform's parser: what it
encodes the platform decodes, what the platform encodes it decodes."""
from __future__ import annotations

import struct

import pytest

from hypervisor import ofcodec, wire
from hypervisor.wire import BadMessage, ofp, parser


def test_a_packet_out_decodes_with_its_actions_and_data() -> None:
    sent = parser.OFPPacketOut(wire.DESC, buffer_id=ofp.OFP_NO_BUFFER, in_port=3,
                               actions=[parser.OFPActionOutput(ofp.OFPP_FLOOD),
                                        parser.OFPActionSetField(eth_dst="00:00:00:00:00:09")],
                               data=b"\x01" * 60)
    got = ofcodec.packet_out(wire.encode(sent, 77))
    assert (got.xid, got.buffer_id, got.in_port, got.data) == (77, ofp.OFP_NO_BUFFER, 3,
                                                               b"\x01" * 60)
    assert [type(a).__name__ for a in got.actions] == ["OFPActionOutput", "OFPActionSetField"]
    assert got.actions[0].port == ofp.OFPP_FLOOD
    assert wire.encode(got, 77) == wire.encode(sent, 77)


@pytest.mark.parametrize("cut", [12, 20, 30])
def test_a_truncated_packet_out_is_a_bad_message(cut: int) -> None:
    raw = wire.encode(parser.OFPPacketOut(wire.DESC, buffer_id=ofp.OFP_NO_BUFFER, in_port=3,
                                          actions=[parser.OFPActionOutput(1)], data=b""), 1)
    short = bytearray(raw[:cut])
    struct.pack_into("!H", short, 2, len(short))
    with pytest.raises(BadMessage):
        ofcodec.packet_out(bytes(short))


def test_an_action_with_a_bad_length_is_refused_as_the_spec_says() -> None:
    raw = bytearray(wire.encode(parser.OFPPacketOut(
        wire.DESC, buffer_id=ofp.OFP_NO_BUFFER, in_port=3,
        actions=[parser.OFPActionOutput(1)], data=b""), 1))
    struct.pack_into("!H", raw, 24 + 2, 12)   # the output action says 12 bytes
    with pytest.raises(BadMessage) as err:
        ofcodec.packet_out(bytes(raw))
    assert (err.value.etype, err.value.code) == (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_LEN)


def test_multipart_requests_decode_to_the_platforms_classes() -> None:
    flow = parser.OFPFlowStatsRequest(wire.DESC, 0, 1, 5, ofp.OFPG_ANY, 0x10, 0xFF,
                                      parser.OFPMatch(in_port=2, eth_type=0x800))
    got = ofcodec.multipart_request(wire.encode(flow, 9))
    assert isinstance(got, parser.OFPFlowStatsRequest)
    assert (got.xid, got.table_id, got.out_port, got.cookie, got.cookie_mask) == (9, 1, 5, 0x10,
                                                                                  0xFF)
    assert dict(got.match.items()) == {"in_port": 2, "eth_type": 0x800}
    port = ofcodec.multipart_request(wire.encode(parser.OFPPortStatsRequest(wire.DESC, 0, 4), 1))
    assert isinstance(port, parser.OFPPortStatsRequest) and port.port_no == 4
    desc = ofcodec.multipart_request(wire.encode(parser.OFPPortDescStatsRequest(wire.DESC, 0), 1))
    assert desc.type == ofp.OFPMP_PORT_DESC
    table = ofcodec.multipart_request(wire.encode(parser.OFPTableStatsRequest(wire.DESC, 0), 1))
    assert isinstance(table, ofcodec.OtherRequest) and table.type == ofp.OFPMP_TABLE


def test_the_virtual_switch_settings_decode() -> None:
    assert ofcodec.set_config(wire.encode(parser.OFPSetConfig(wire.DESC, 1, 200), 1)) == (1, 200)
    masks = dict(packet_in_mask=[1, 2], port_status_mask=[3, 4], flow_removed_mask=[5, 6])
    assert ofcodec.set_async(wire.encode(parser.OFPSetAsync(wire.DESC, **masks), 1)) == masks
    role = parser.OFPRoleRequest(wire.DESC, ofp.OFPCR_ROLE_MASTER, 12)
    assert ofcodec.role_request(wire.encode(role, 1)) == (ofp.OFPCR_ROLE_MASTER, 12)
    assert ofcodec.port_mod(wire.encode(parser.OFPPortMod(
        wire.DESC, 7, "00:00:00:00:00:01", 0, 0, 0), 1)).port_no == 7


def test_the_replies_it_encodes_are_what_the_platform_decodes() -> None:
    role = wire.decode(ofcodec.role_reply(ofp.OFPCR_ROLE_MASTER, 99, 5))
    assert (role.xid, role.role, role.generation_id) == (5, ofp.OFPCR_ROLE_MASTER, 99)
    cfg = wire.decode(ofcodec.get_config_reply(0, 128, 6))
    assert (cfg.xid, cfg.flags, cfg.miss_send_len) == (6, 0, 128)
    masks = dict(packet_in_mask=[3, 0], port_status_mask=[7, 7], flow_removed_mask=[15, 0])
    got = wire.decode(ofcodec.get_async_reply(masks, 7))
    assert (got.packet_in_mask, got.port_status_mask, got.flow_removed_mask) == ([3, 0], [7, 7],
                                                                                 [15, 0])


def _packet_in(data: bytes, in_port: int = 3) -> bytes:
    match = parser.OFPMatch(in_port=in_port)
    buf = bytearray()
    mlen = match.serialize(buf, 0)
    body = struct.pack("!IHBBQ", ofp.OFP_NO_BUFFER, len(data), ofp.OFPR_NO_MATCH, 0, 0)
    raw = bytes(buf[:mlen]) + b"\x00" * (-(mlen) % 8) + b"\x00\x00" + data
    return struct.pack("!BBHI", 4, ofp.OFPT_PACKET_IN, 8 + len(body) + len(raw), 0) + body + raw


def test_a_packet_in_gets_other_data_and_stays_decodable() -> None:
    tagged = b"\xff" * 12 + b"\x81\x00\x00\x0a" + b"\x08\x00" + b"x" * 46
    raw = _packet_in(tagged)
    assert wire.decode(raw).data == tagged
    untagged = tagged[:12] + tagged[16:]
    got = wire.decode(ofcodec.packet_in_with(raw, untagged, len(untagged)))
    assert (got.data, got.total_len, got.match["in_port"]) == (untagged, len(untagged), 3)


def _port_stats_reply(ports: list) -> bytes:
    entries = b"".join(struct.pack("!I4x", p) + b"\x00" * 104 for p in ports)
    return struct.pack("!BBHIHH4x", 4, ofp.OFPT_MULTIPART_REPLY, 16 + len(entries), 3,
                       ofp.OFPMP_PORT_STATS, 0) + entries


def test_a_multipart_reply_keeps_only_the_entries_asked_for() -> None:
    raw = _port_stats_reply([1, 2, 3])
    assert [p.port_no for p in wire.decode(raw).body] == [1, 2, 3]
    kept = ofcodec.multipart_filtered(raw, lambda _i, e: struct.unpack_from("!I", e)[0] != 2)
    assert [p.port_no for p in wire.decode(kept).body] == [1, 3]
    none = ofcodec.multipart_filtered(raw, lambda _i, _e: False)
    assert wire.decode(none).body == [] and len(none) == 16


def test_a_multipart_reply_whose_entries_overrun_is_fatal() -> None:
    raw = bytearray(_port_stats_reply([1]))[:-8]
    struct.pack_into("!H", raw, 2, len(raw))
    with pytest.raises(BadMessage):
        ofcodec.multipart_filtered(bytes(raw), lambda _i, _e: True)
