"""The half of OpenFlow 1.3 the platform's parser lacks, for a program that is a switch to its
tenants and a controller to its switches.

Ryu's and os-ken's ofproto parsers are one-directional: they decode what a switch sends and
encode what a controller sends. A hypervisor also decodes what a controller sends (PACKET_OUT,
MULTIPART_REQUEST, the *_MODs) and encodes what a switch sends (ROLE_REPLY, GET_CONFIG_REPLY,
GET_ASYNC_REPLY, a packet-in without its VLAN tag, a multipart reply with other slices' entries
left out). Those few are here, by `struct`, and nothing else: every decoder returns the platform's
own message class (actions and matches are read by the platform's parsers), and the tests check
every encoder by decoding its output with the platform's parser.
"""
from __future__ import annotations

import struct
from typing import Any, Callable, List

from hypervisor.wire import DESC, HEADER, BadMessage, ofp, parser

_PACKET_OUT = struct.Struct("!IIH6x")           # buffer_id, in_port, actions_len
_MULTIPART = struct.Struct("!HH4x")             # type, flags
_FLOW_STATS_REQ = struct.Struct("!B3xII4xQQ")   # table_id, out_port, out_group, cookie, mask
_PORT_DESC_LEN = 64
_PORT_STATS_LEN = 112


class OtherRequest:
    """A multipart request of a type the slicer refuses: only its type is read."""

    def __init__(self, mp_type: int, xid: int) -> None:
        self.type, self.xid = mp_type, xid


def _body(raw: bytes, fixed: struct.Struct, what: str) -> tuple:
    if len(raw) < HEADER.size + fixed.size:
        raise BadMessage(f"{what} of {len(raw)} bytes is too short", raw)
    return fixed.unpack_from(raw, HEADER.size)


def _actions(raw: bytes, offset: int, length: int) -> List[Any]:
    actions, end = [], offset + length
    if end > len(raw):
        raise BadMessage("actions run past the message's end", raw)
    while offset < end:
        if end - offset < 4:
            raise BadMessage("a truncated action", raw)
        alen = struct.unpack_from("!H", raw, offset + 2)[0]
        if alen < 8 or alen % 8 or offset + alen > end:
            raise BadMessage(f"an action of length {alen}", raw, ofp.OFPET_BAD_ACTION,
                             ofp.OFPBAC_BAD_LEN)
        try:
            actions.append(parser.OFPAction.parser(raw, offset))
        except Exception as exc:  # noqa: BLE001  the platform raises anything on bad input
            raise BadMessage(f"action: {type(exc).__name__}: {exc}", raw, ofp.OFPET_BAD_ACTION,
                             ofp.OFPBAC_BAD_TYPE) from None
        offset += alen
    return actions


def packet_out(raw: bytes) -> Any:
    buffer_id, in_port, actions_len = _body(raw, _PACKET_OUT, "PACKET_OUT")
    start = HEADER.size + _PACKET_OUT.size
    actions = _actions(raw, start, actions_len)
    msg = parser.OFPPacketOut(DESC, buffer_id=buffer_id, in_port=in_port, actions=actions,
                              data=raw[start + actions_len:])
    msg.xid = HEADER.unpack_from(raw)[3]
    return msg


def multipart_request(raw: bytes) -> Any:
    mp_type, flags = _body(raw, _MULTIPART, "MULTIPART_REQUEST")
    xid = HEADER.unpack_from(raw)[3]
    body = HEADER.size + _MULTIPART.size
    if mp_type == ofp.OFPMP_DESC:
        msg: Any = parser.OFPDescStatsRequest(DESC, flags)
    elif mp_type == ofp.OFPMP_PORT_DESC:
        msg = parser.OFPPortDescStatsRequest(DESC, flags)
    elif mp_type == ofp.OFPMP_PORT_STATS:
        if len(raw) < body + 8:
            raise BadMessage("PORT_STATS request too short", raw)
        msg = parser.OFPPortStatsRequest(DESC, flags, struct.unpack_from("!I", raw, body)[0])
    elif mp_type == ofp.OFPMP_FLOW:
        if len(raw) < body + _FLOW_STATS_REQ.size + 4:
            raise BadMessage("FLOW stats request too short", raw)
        table_id, out_port, out_group, cookie, mask = _FLOW_STATS_REQ.unpack_from(raw, body)
        try:
            match = parser.OFPMatch.parser(raw, body + _FLOW_STATS_REQ.size)
        except Exception as exc:  # noqa: BLE001
            raise BadMessage(f"match: {type(exc).__name__}: {exc}", raw, ofp.OFPET_BAD_MATCH,
                             ofp.OFPBMC_BAD_LEN) from None
        msg = parser.OFPFlowStatsRequest(DESC, flags, table_id, out_port, out_group, cookie,
                                         mask, match)
    else:
        return OtherRequest(mp_type, xid)
    msg.xid = xid
    return msg


def port_mod(raw: bytes) -> Any:
    if len(raw) < HEADER.size + 4:
        raise BadMessage("PORT_MOD too short", raw)
    return parser.OFPPortMod(DESC, port_no=struct.unpack_from("!I", raw, HEADER.size)[0])


#: a message of these types is refused whatever it says (groups, meters, tables are shared)
SHARED_MODS = {ofp.OFPT_GROUP_MOD: parser.OFPGroupMod, ofp.OFPT_METER_MOD: parser.OFPMeterMod,
               ofp.OFPT_TABLE_MOD: parser.OFPTableMod}


def shared_mod(raw: bytes) -> Any:
    return SHARED_MODS[raw[1]](DESC)


# -- switch -> controller -----------------------------------------------------------------------
def _message(msg_type: int, xid: int, body: bytes) -> bytes:
    return HEADER.pack(ofp.OFP_VERSION, msg_type, HEADER.size + len(body), xid) + body


def role_reply(role: int, generation_id: int, xid: int) -> bytes:
    return _message(ofp.OFPT_ROLE_REPLY, xid, struct.pack("!I4xQ", role, generation_id))


def get_config_reply(flags: int, miss_send_len: int, xid: int) -> bytes:
    return _message(ofp.OFPT_GET_CONFIG_REPLY, xid, struct.pack("!HH", flags, miss_send_len))


def get_async_reply(masks: dict, xid: int) -> bytes:
    values = masks["packet_in_mask"] + masks["port_status_mask"] + masks["flow_removed_mask"]
    return _message(ofp.OFPT_GET_ASYNC_REPLY, xid, struct.pack("!6I", *values))


def packet_in_with(raw: bytes, data: bytes, total_len: int) -> bytes:
    """The packet-in `raw` with other data (the same packet, its VLAN tag removed)."""
    old = HEADER.unpack_from(raw)
    kept = raw[:len(raw) - _data_len(raw)]
    out = bytearray(kept + data)
    struct.pack_into("!H", out, 2, len(out))
    struct.pack_into("!H", out, 12, total_len)
    assert old[0] == ofp.OFP_VERSION
    return bytes(out)


def _data_len(raw: bytes) -> int:
    """A packet-in's data length: what follows its match (padded to 8) and 2 bytes of pad."""
    match_len = struct.unpack_from("!H", raw, 26)[0]
    start = 24 + (match_len + 7) // 8 * 8 + 2
    return len(raw) - start


def multipart_filtered(raw: bytes, keep: Callable[[int, bytes], bool]) -> bytes:
    """The reply with only the entries `keep(index, entry bytes)` says yes to. Entries of
    PORT_DESC and PORT_STATS are fixed-size, FLOW entries say their length."""
    mp_type = struct.unpack_from("!H", raw, 8)[0]
    pos = HEADER.size + _MULTIPART.size
    kept, index = [], 0
    while pos < len(raw):
        if mp_type == ofp.OFPMP_FLOW:
            size = struct.unpack_from("!H", raw, pos)[0]
        elif mp_type == ofp.OFPMP_PORT_DESC:
            size = _PORT_DESC_LEN
        elif mp_type == ofp.OFPMP_PORT_STATS:
            size = _PORT_STATS_LEN
        else:
            return raw
        if size <= 0 or pos + size > len(raw):
            raise BadMessage(f"a multipart entry of {size} bytes at {pos}", raw, fatal=True)
        entry = raw[pos:pos + size]
        if keep(index, entry):
            kept.append(entry)
        pos, index = pos + size, index + 1
    head = bytearray(raw[:HEADER.size + _MULTIPART.size])
    body = b"".join(kept)
    struct.pack_into("!H", head, 2, len(head) + len(body))
    return bytes(head) + body


# -- what a tenant sets on its virtual switch (kept by the instance, never forwarded) -----------
_SET_CONFIG = struct.Struct("!HH")
_SET_ASYNC = struct.Struct("!6I")
_ROLE = struct.Struct("!I4xQ")


def set_config(raw: bytes) -> tuple:
    """(flags, miss_send_len)."""
    return _body(raw, _SET_CONFIG, "SET_CONFIG")


def set_async(raw: bytes) -> dict:
    v = _body(raw, _SET_ASYNC, "SET_ASYNC")
    return {"packet_in_mask": [v[0], v[1]], "port_status_mask": [v[2], v[3]],
            "flow_removed_mask": [v[4], v[5]]}


def role_request(raw: bytes) -> tuple:
    """(role, generation_id)."""
    return _body(raw, _ROLE, "ROLE_REQUEST")
