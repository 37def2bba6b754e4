"""Every OpenFlow message the suite's apps build, in one place, for OpenFlow 1.3 and 1.5.

Builders take a datapath *or* a protocol descriptor (`compat.protocol(version)`), so pure code and
tests can build and serialise messages without a switch.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

from sdnmig import compat

#: Cookie of every flow the learning app installs (upper 32 bits); deletes are limited to it.
LEARNING_COOKIE = 0x5D4E1EA4_00000000
COOKIE_APP_MASK = 0xFFFFFFFF_00000000

ONF_EXPERIMENTER = 0x4F4E4600
ONF_ET_ROLE_STATUS = 1911


def role_request(dp: Any, role: int, generation_id: int, xid: Optional[int] = None):
    parser = dp.ofproto_parser
    if dp.ofproto.OFP_VERSION >= compat.ofproto_v1_5.OFP_VERSION:
        msg = parser.OFPRoleRequest(dp, role, short_id=0, generation_id=generation_id)
    else:
        msg = parser.OFPRoleRequest(dp, role, generation_id=generation_id)
    if xid is not None:
        msg.xid = xid
    return msg


def barrier(dp: Any):
    return dp.ofproto_parser.OFPBarrierRequest(dp)


def output(dp: Any, port: int):
    ofp = dp.ofproto
    return dp.ofproto_parser.OFPActionOutput(port, ofp.OFPCML_NO_BUFFER)


def flow_add(dp: Any, priority: int, match: Any, actions: Iterable[Any], *, cookie: int = 0,
             idle_timeout: int = 0, hard_timeout: int = 0, table_id: int = 0, flags: int = 0):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, list(actions))]
    return parser.OFPFlowMod(dp, cookie=cookie, table_id=table_id, command=ofp.OFPFC_ADD,
                             idle_timeout=idle_timeout, hard_timeout=hard_timeout,
                             priority=priority, buffer_id=ofp.OFP_NO_BUFFER,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, flags=flags,
                             match=match, instructions=inst)


def flow_delete(dp: Any, *, cookie: int = 0, cookie_mask: int = 0, match: Any = None,
                out_port: Optional[int] = None, table_id: Optional[int] = None):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(dp, cookie=cookie, cookie_mask=cookie_mask,
                             table_id=ofp.OFPTT_ALL if table_id is None else table_id,
                             command=ofp.OFPFC_DELETE,
                             out_port=ofp.OFPP_ANY if out_port is None else out_port,
                             out_group=ofp.OFPG_ANY,
                             match=match if match is not None else parser.OFPMatch())


def table_miss(dp: Any, cookie: int):
    """Priority-0 rule sending unmatched packets to the controller, whole (no switch buffering)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return flow_add(dp, 0, parser.OFPMatch(), [output(dp, ofp.OFPP_CONTROLLER)], cookie=cookie)


def packet_out(dp: Any, in_port: int, actions: Iterable[Any], buffer_id: int,
               data: Optional[bytes]):
    """PACKET_OUT; data is sent only for unbuffered packets. OF1.5 carries in_port in a match."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    payload = data if buffer_id == ofp.OFP_NO_BUFFER else None
    if ofp.OFP_VERSION >= compat.ofproto_v1_5.OFP_VERSION:
        return parser.OFPPacketOut(dp, buffer_id=buffer_id, match=parser.OFPMatch(in_port=in_port),
                                   actions=list(actions), data=payload)
    return parser.OFPPacketOut(dp, buffer_id=buffer_id, in_port=in_port, actions=list(actions),
                               data=payload)


def l2_match(dp: Any, in_port: int, eth_src: bytes, eth_dst: bytes):
    """Match on (in_port, eth_src, eth_dst), MACs as the 6 raw bytes of the packet.

    On OF1.3 the parser's compose API takes raw bytes; its keyword API converts text MACs through
    netaddr, which was half of the learning app's CPU under load (ofbench: 6.3k -> 10.7k
    packet-ins/s). Same wire bytes either way (pinned by a unit test). OF1.5 has only keywords.
    """
    parser = dp.ofproto_parser
    if dp.ofproto.OFP_VERSION == compat.ofproto_v1_3.OFP_VERSION:
        match = parser.OFPMatch()
        match.set_in_port(in_port)
        match.set_dl_src(bytes(eth_src))
        match.set_dl_dst(bytes(eth_dst))
        return match
    return parser.OFPMatch(in_port=in_port, eth_src=_mac_text(eth_src), eth_dst=_mac_text(eth_dst))


def _mac_text(mac: bytes) -> str:
    return bytes(mac).hex(":")


def eth_dst_match(dp: Any, eth_dst: str):
    return dp.ofproto_parser.OFPMatch(eth_dst=eth_dst)


def in_port_match(dp: Any, in_port: int):
    return dp.ofproto_parser.OFPMatch(in_port=in_port)


#: Cookie of the migration marker flow (upper 32 bits); the lower 32 bits carry the marker's tag.
MARKER_COOKIE = 0x5D4E3A6C_00000000
MARKER_ETH_TYPE = 0x88B6  # IEEE 802 local experimental: no real traffic matches the marker
MARKER_PRIORITY = 1


def marker_tag(cookie: int) -> Optional[int]:
    """The tag of a migration marker's cookie, or None for any other flow."""
    if cookie & COOKIE_APP_MASK != MARKER_COOKIE:
        return None
    return cookie & 0xFFFFFFFF


def marker_add(dp: Any, tag: int):
    """A dummy flow whose removal (FLOW_REMOVED, to master and equals) marks a point in the stream."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return flow_add(dp, MARKER_PRIORITY, parser.OFPMatch(eth_type=MARKER_ETH_TYPE), [],
                    cookie=MARKER_COOKIE | (tag & 0xFFFFFFFF), flags=ofp.OFPFF_SEND_FLOW_REM)


def marker_delete(dp: Any, tag: int):
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(dp, cookie=MARKER_COOKIE | (tag & 0xFFFFFFFF),
                             cookie_mask=0xFFFFFFFF_FFFFFFFF, table_id=0,
                             command=ofp.OFPFC_DELETE_STRICT, priority=MARKER_PRIORITY,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                             match=parser.OFPMatch(eth_type=MARKER_ETH_TYPE))


def set_async(dp: Any, slave_gets_packet_ins: bool):
    """Asynchronous messages a SLAVE connection receives: packet-ins and flow-removed too (a
    migration's standby) or only port status (OpenFlow's default). MASTER/EQUAL get everything."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if ofp.OFP_VERSION >= compat.ofproto_v1_5.OFP_VERSION:
        pin, frem = (0x3F, 0x3F) if slave_gets_packet_ins else (0, 0)
        props = [parser.OFPAsyncConfigPropReasons(ofp.OFPACPT_PACKET_IN_SLAVE, mask=pin),
                 parser.OFPAsyncConfigPropReasons(ofp.OFPACPT_FLOW_REMOVED_SLAVE, mask=frem),
                 parser.OFPAsyncConfigPropReasons(ofp.OFPACPT_PACKET_IN_MASTER, mask=0x3F),
                 parser.OFPAsyncConfigPropReasons(ofp.OFPACPT_FLOW_REMOVED_MASTER, mask=0x3F)]
        return parser.OFPSetAsync(dp, props)
    pin, frem = (0x7, 0xF) if slave_gets_packet_ins else (0, 0)
    return parser.OFPSetAsync(dp, packet_in_mask=[0x7, pin], port_status_mask=[0x7, 0x7],
                              flow_removed_mask=[0xF, frem])
