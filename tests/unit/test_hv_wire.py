"""OpenFlow framing, checks and control messages on the hypervisor's links (pure parts)."""
from __future__ import annotations

import asyncio
import struct

import pytest

from hypervisor import wire
from hypervisor.wire import BadMessage, ofp, parser
from sdnmig import cpm_stats


def _read(data: bytes) -> bytes:
    async def go() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await wire.read_raw(reader)
    return asyncio.run(go())


def test_a_message_is_framed_by_its_headers_length() -> None:
    one = wire.encode(parser.OFPFeaturesRequest(wire.DESC), 7)
    assert _read(one + b"trailing bytes") == one


def test_a_length_under_the_header_is_fatal_for_the_connection() -> None:
    with pytest.raises(BadMessage) as err:
        _read(struct.pack("!BBHI", 4, 5, 4, 1))
    assert err.value.fatal


def test_a_truncated_message_is_the_end_of_the_stream() -> None:
    with pytest.raises(asyncio.IncompleteReadError):
        _read(struct.pack("!BBHI", 4, 5, 100, 1) + b"short")


@pytest.mark.parametrize("raw, etype, code", [
    (struct.pack("!BBHI", 1, 5, 8, 1), ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_VERSION),
    (struct.pack("!BBHI", 4, 250, 8, 1), ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE),
    # a FLOW_MOD of 8 bytes: the parser cannot read its body
    (struct.pack("!BBHI", 4, ofp.OFPT_FLOW_MOD, 8, 1), ofp.OFPET_BAD_REQUEST,
     ofp.OFPBRC_BAD_LEN),
], ids=["version", "type", "body"])
def test_what_does_not_decode_is_a_bad_message_with_its_error(raw: bytes, etype: int,
                                                              code: int) -> None:
    with pytest.raises(BadMessage) as err:
        wire.decode(raw)
    assert (err.value.etype, err.value.code) == (etype, code)
    assert not err.value.fatal


def test_an_error_carries_the_offending_requests_first_64_bytes() -> None:
    raw = bytes(range(200)) * 1
    err = wire.decode(wire.error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM, 42, raw))
    assert (err.type, err.code, err.xid, err.data) == (ofp.OFPET_BAD_REQUEST,
                                                       ofp.OFPBRC_EPERM, 42, raw[:64])


def test_control_messages_round_trip_and_tenant_messages_are_not_control() -> None:
    raw = wire.control("TakeOver", mid="00000000abcd")
    assert wire.as_control(raw) == wire.ControlMsg("TakeOver", {"mid": "00000000abcd"})
    assert wire.decode(raw).experimenter == wire.CONTROL_EXPERIMENTER   # valid OpenFlow too
    theirs = wire.encode(parser.OFPExperimenter(wire.DESC, experimenter=0x2320, exp_type=1,
                                                data=b"{}"), 1)
    assert wire.as_control(theirs) is None
    assert wire.as_control(wire.encode(parser.OFPBarrierRequest(wire.DESC), 1)) is None


def test_a_control_message_that_does_not_decode_is_fatal() -> None:
    raw = wire.encode(parser.OFPExperimenter(wire.DESC, experimenter=wire.CONTROL_EXPERIMENTER,
                                             exp_type=0, data=b"not json"), 0)
    with pytest.raises(BadMessage) as err:
        wire.as_control(raw)
    assert err.value.fatal


def test_xids_are_rewritten_in_place() -> None:
    raw = wire.encode(parser.OFPBarrierRequest(wire.DESC), 1)
    assert wire.header(wire.with_xid(raw, 0xDEADBEEF))[3] == 0xDEADBEEF


def test_the_hello_bitmap_is_read() -> None:
    def hello(bits: int) -> bytes:  # version 1 header, one bitmap element (padded to 8)
        return struct.pack("!BBHIHHI", 1, 0, 16, 0, ofp.OFPHET_VERSIONBITMAP, 8, bits)
    ten, only10 = hello(1 << 1 | 1 << 4), hello(1 << 1)
    assert wire._bitmap_has(ten, 4) and not wire._bitmap_has(only10, 4)


# -- the benchmark's definitions -----------------------------------------------------------------
def test_a_run_counts_late_replies_as_lost_and_holds_its_rate_within_5_percent() -> None:
    sent = [i / 100 for i in range(100)]
    lat = [1.0] * 94 + [None] * 5 + [1500.0]
    s = cpm_stats.summarize_run(100, 1.0, sent, lat)
    assert s["lost"] == 6 and s["achieved_rate"] == 94 and not s["rate_held"]
    s = cpm_stats.summarize_run(100, 1.0, sent, [1.0] * 95 + [None] * 5)
    assert s["rate_held"] and s["peak_ms"] == 1.0


def test_affected_requests_run_from_the_initials_last_to_the_targets_first_reply() -> None:
    sent = [i / 1000 for i in range(1000)]
    lat = [0.5] * 500 + [45.0 - i for i in range(45)] + [0.5] * 455
    s = cpm_stats.summarize_run(1000, 1.0, sent, lat, first_to_target=500)
    assert s["affected"] == 47      # #499 (the initial's last), then 500..545 ms: the reply
    assert s["peak_ms"] == 45.0     # of #500 came at 545 ms
    s = cpm_stats.summarize_run(1000, 1.0, sent, lat, first_to_target=500, last_to_initial=497)
    assert s["affected"] == 49      # the proxy knows better: #497 was the initial's last


def test_a_generator_that_cannot_keep_up_does_not_hold_its_rate() -> None:
    sent = [i / 500 for i in range(1000)]          # 1000 requests "at 1000/s" took 2 s
    s = cpm_stats.summarize_run(1000, 1.0, sent, [1.0] * 1000)
    assert s["lost"] == 0 and not s["rate_held"] and s["achieved_rate"] < 501


def test_the_highest_rate_without_loss_stops_at_the_first_failing_rate() -> None:
    ok = {"lost_total": 0, "rate_held_all": True}
    by_rate = {100: ok, 500: ok, 1000: {"lost_total": 1, "rate_held_all": True}, 5000: ok}
    assert cpm_stats.max_rate_zero_loss(by_rate) == 500
    assert cpm_stats.max_rate_zero_loss({100: {"lost_total": 0, "rate_held_all": False}}) \
        is None


def test_the_series_keeps_each_buckets_worst_latency() -> None:
    assert cpm_stats.series([0.0, 0.05, 0.15], [1.0, None, 2.0]) == [[0.0, 1.0, 2],
                                                                    [0.1, 2.0, 1]]
