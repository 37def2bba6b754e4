"""The shim reads the apps' messages as the wire has them, and writes replies per version."""
from __future__ import annotations

import pytest

from lime_shim import ofconv
from lime_shim.model import Output, Rule, match_of
from ryu_apps import ofmsgs
from sdnmig import compat

H1, H2 = b"\x00\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x02"
VERSIONS = sorted(compat.OFPROTOS)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_learning_apps_flow_mod_reads_back_exactly(version):
    dp = compat.protocol(version)
    fm = ofmsgs.flow_add(dp, 10, ofmsgs.l2_match(dp, 3, H1, H2), [ofmsgs.output(dp, 2)],
                         cookie=7, idle_timeout=60)
    got = ofconv.flow_mod_from(fm)
    assert got.rule == Rule(10, match_of(in_port=3, eth_src="00:00:00:00:00:01",
                                         eth_dst="00:00:00:00:00:02"),
                            (Output(2, 0xFFFF),), cookie=7, idle_timeout=60)
    back = ofconv.flow_add_to(dp, got.rule)
    back.serialize()
    again = compat.parse(version, bytes(back.buf))
    assert ofconv.match_from(again.match) == got.rule.match


@pytest.mark.parametrize("version", VERSIONS)
def test_full_masks_are_exact_matches(version):
    parser = compat.protocol(version).ofproto_parser
    m = parser.OFPMatch(eth_dst=("00:00:00:00:00:02", "ff:ff:ff:ff:ff:ff"), eth_type=0x800,
                        ipv4_dst=("10.0.0.2", "255.255.255.255"))
    assert ofconv.match_from(m) == match_of(eth_dst="00:00:00:00:00:02", eth_type=0x800,
                                            ipv4_dst="10.0.0.2")
    m = parser.OFPMatch(ipv4_dst=("10.0.0.0", "255.255.255.0"), eth_type=0x800)
    assert dict(ofconv.match_from(m))["ipv4_dst"] == ("10.0.0.0", "255.255.255.0")


@pytest.mark.parametrize("version", VERSIONS)
def test_flow_removed_for_the_app_in_each_version(version):
    dp = compat.protocol(version)
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if hasattr(parser, "OFPStats"):
        stats = parser.OFPStats(duration=(3, 5), packet_count=9, byte_count=900)
        phys = parser.OFPFlowRemoved(dp, table_id=0, reason=ofp.OFPRR_IDLE_TIMEOUT, priority=10,
                                     idle_timeout=1, hard_timeout=0, cookie=1,
                                     match=parser.OFPMatch(in_port=7), stats=stats)
    else:
        phys = parser.OFPFlowRemoved(dp, cookie=1, priority=10, reason=ofp.OFPRR_IDLE_TIMEOUT,
                                     table_id=0, duration_sec=3, duration_nsec=5, idle_timeout=1,
                                     hard_timeout=0, packet_count=9, byte_count=900,
                                     match=parser.OFPMatch(in_port=7))
    phys.xid = 4
    rule = Rule(10, match_of(in_port=2), (Output(1),), cookie=0xABC, idle_timeout=1)
    msg = ofconv.flow_removed_to(dp, rule, phys)  # an event object: switches send it, not us
    assert (msg.cookie, msg.priority, msg.reason, msg.xid) == (0xABC, 10, ofp.OFPRR_IDLE_TIMEOUT, 4)
    assert msg.match["in_port"] == 2 and msg.msg_type == ofp.OFPT_FLOW_REMOVED
    counts = msg.stats if hasattr(msg, "stats") else msg
    assert counts["packet_count"] == 9 if hasattr(msg, "stats") else counts.packet_count == 9


OLD_SETTERS = {"in_port": ("set_in_port", 5), "eth_dst": ("set_dl_dst", H2),
               "eth_src": ("set_dl_src", H1), "eth_type": ("set_dl_type", 0x800)}


@pytest.mark.parametrize("fields", [("in_port",), ("eth_dst",), ("in_port", "eth_src", "eth_dst"),
                                    ("eth_type", "eth_dst"), tuple(OLD_SETTERS)])
def test_the_old_api_fast_path_reads_what_the_wire_says(fields):
    """OF1.3 compose-API matches are read from the parser's fields, not by a serialise and parse:
    the same tuple as the round trip, and written back to the same wire bytes."""
    dp = compat.protocol(min(VERSIONS))
    parser = dp.ofproto_parser
    m = parser.OFPMatch()
    for f in fields:
        setter, value = OLD_SETTERS[f]
        getattr(m, setter)(value)
    fast = ofconv._old_api_fast(m)
    assert fast is not None
    buf = bytearray()
    m.serialize(buf, 0)
    slow = tuple(sorted((k, ofconv._normal(v)) for k, v in
                        type(m).parser(bytes(buf), 0).items()))
    assert ofconv.match_from(m) == fast == slow
    back, wire = bytearray(), bytearray()
    ofconv.match_to_wire(parser, fast).serialize(back, 0)
    parser.OFPMatch(**dict(fast)).serialize(wire, 0)
    assert back == wire


def test_masked_or_other_old_api_fields_take_the_round_trip():
    parser = compat.protocol(min(VERSIONS)).ofproto_parser
    m = parser.OFPMatch()
    m.set_dl_dst_masked(H2, b"\xff\xff\xff\x00\x00\x00")
    assert ofconv._old_api_fast(m) is None
    assert isinstance(dict(ofconv.match_from(m))["eth_dst"], tuple)
    m = parser.OFPMatch()
    m.set_in_port(1)
    m.set_ip_proto(6)
    assert ofconv._old_api_fast(m) is None
    assert ofconv.match_from(m) == match_of(in_port=1, ip_proto=6)
