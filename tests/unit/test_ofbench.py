"""ofbench's message building, decoding, answer matching and statistics (no root, no network
except one in-process loopback exchange with the null responder)."""
from __future__ import annotations

import asyncio
import io
import json
import struct
from typing import Any, List

import pytest

from experiments import common
from experiments import ofbench as ob
from ryu_apps import ofmsgs
from sdnmig import compat

OFP, PARSER, PROTO = ob.OFP, ob.PARSER, ob.PROTO


def parse(raw: bytes) -> Any:
    msg = compat.parse(ob.VERSION, bytes(raw))
    assert msg is not None, "the platform could not decode it"
    return msg


def messages(buf: bytes) -> List[bytes]:
    found, used = ob.split_messages(bytearray(buf))
    assert used == len(buf)
    return [bytes(buf[off:off + n]) for _, off, n in found]


# -- packet-ins ----------------------------------------------------------------------------------

def test_packet_in_builder_round_trips() -> None:
    frame = ob.ethernet_frame(ob.host_mac(3, 9), ob.host_mac(3, 4))
    msg = parse(ob.packet_in(0x1234, 77, 5, frame))
    assert isinstance(msg, PARSER.OFPPacketIn)
    assert (msg.xid, msg.buffer_id, msg.total_len, msg.reason) == (0x1234, 77, 60, OFP.OFPR_NO_MATCH)
    assert msg.match["in_port"] == 5
    assert bytes(msg.data) == frame


def test_layout_offsets_are_found_not_assumed() -> None:
    lay = ob.PacketInLayout.find()
    raw = bytearray(ob.packet_in(0, 0, 1, ob.ethernet_frame(bytes(6), ob.host_mac(0, 0))))
    struct.pack_into("!I", raw, lay.xid, 0xA1B2C3D4)
    struct.pack_into("!I", raw, lay.buffer_id, 0x01020304)
    raw[lay.eth_dst:lay.eth_dst + 6] = b"\x02\xaa\xbb\xcc\xdd\xee"
    msg = parse(raw)
    assert (msg.xid, msg.buffer_id) == (0xA1B2C3D4, 0x01020304)
    assert bytes(msg.data[:6]) == b"\x02\xaa\xbb\xcc\xdd\xee"
    assert lay.length == len(raw)


def test_field_offset_rejects_a_field_that_is_not_contiguous() -> None:
    assert ob.field_offset(lambda v: b"ab" + v + b"z", 4) == 2
    with pytest.raises(ValueError):
        ob.field_offset(lambda v: v[:2] + b"--" + v[2:], 4)
    with pytest.raises(ValueError):
        ob.field_offset(lambda v: v[:1], 4)


def test_factory_batch_patches_xid_buffer_id_and_macs() -> None:
    hosts = 7
    fac = ob.PacketInFactory(switch=2, hosts=hosts)
    ids = [11, 12, 13, 0xFFFFFFFE]
    raws = messages(bytes(fac.batch(ids)))
    assert len(raws) == len(ids)
    for seq, (bid, raw) in enumerate(zip(ids, raws)):
        msg = parse(raw)
        src, dst = ob.traffic_pair(seq, hosts)
        assert (msg.xid, msg.buffer_id) == (bid, bid)
        assert msg.match["in_port"] == ob.host_port(src)
        assert bytes(msg.data[6:12]) == ob.host_mac(2, src)
        assert bytes(msg.data[0:6]) == ob.host_mac(2, dst)
    assert fac.seq == len(ids)


def test_macs_are_unicast_local_and_unique() -> None:
    macs = {ob.host_mac(s, h) for s in range(3) for h in range(300)}
    assert len(macs) == 900
    assert all(m[0] & 1 == 0 and m[0] & 2 for m in macs)


@pytest.mark.parametrize("hosts", [2, 3, 7, 30])
def test_traffic_walks_every_ordered_pair_once(hosts: int) -> None:
    pairs = [ob.traffic_pair(seq, hosts) for seq in range(hosts * (hosts - 1))]
    assert all(s != d for s, d in pairs)
    assert len(set(pairs)) == len(pairs) == hosts * (hosts - 1)
    # sources first: every host has sent once after `hosts` packet-ins (the app learns them all)
    assert {s for s, _ in pairs[:hosts]} == set(range(hosts))


# -- answers ------------------------------------------------------------------------------------

def test_outstanding_ids_skip_no_buffer_and_live_ids() -> None:
    book = ob.Outstanding(first_id=ob.MAX_BUFFER_ID - 1)
    first = book.issue(2, now=0.0)
    assert first == [ob.MAX_BUFFER_ID - 1, ob.MAX_BUFFER_ID]
    assert book.issue(1, now=0.0) == [1]  # wrapped, never OFP_NO_BUFFER or 0
    assert book.answer(ob.MAX_BUFFER_ID) and not book.answer(ob.MAX_BUFFER_ID)
    assert not book.answer(ob.NO_BUFFER)
    book2 = ob.Outstanding(first_id=1)
    book2.issue(3, now=0.0)
    book2._next = 2  # force a collision with ids 2 and 3 still outstanding
    assert book2.issue(1, now=0.0) == [4]
    with pytest.raises(ValueError):
        ob.Outstanding(first_id=0)


def test_outstanding_expires_only_the_old() -> None:
    book = ob.Outstanding()
    book.issue(3, now=1.0)
    book.issue(2, now=5.0)
    assert book.expire(now=6.0, age=2.0) == 3
    assert len(book) == 2 and sorted(book.sent) == [4, 5]


def test_answered_buffer_id_reads_packet_out_and_flow_mod() -> None:
    po = ob.serialise(ofmsgs.packet_out(PROTO, 3, [ofmsgs.output(PROTO, 2)], 4242, None), 9)
    fm = ofmsgs.flow_add(PROTO, 10, PARSER.OFPMatch(in_port=1), [ofmsgs.output(PROTO, 2)])
    fm_nobuf = ob.serialise(fm, 10)
    fm.buffer_id = 777
    fm_buf = ob.serialise(fm, 11)
    assert ob.answered_buffer_id(OFP.OFPT_PACKET_OUT, po, 0) == 4242
    assert ob.answered_buffer_id(OFP.OFPT_FLOW_MOD, fm_nobuf, 0) == ob.NO_BUFFER
    assert ob.answered_buffer_id(OFP.OFPT_FLOW_MOD, b"xx" + fm_buf, 2) == 777
    assert ob.answered_buffer_id(OFP.OFPT_ECHO_REQUEST, ob.echo_request(1), 0) is None


def test_split_messages_keeps_partial_tail_and_rejects_bad_length() -> None:
    a, b = ob.echo_request(1, b"x"), ob.barrier_reply(2)
    buf = bytearray(a + b + b[:5])
    found, used = ob.split_messages(buf)
    assert [(t, off, n) for t, off, n in found] == [
        (OFP.OFPT_ECHO_REQUEST, 0, len(a)), (OFP.OFPT_BARRIER_REPLY, len(a), len(b))]
    assert used == len(a) + len(b)
    with pytest.raises(ValueError):
        ob.split_messages(bytearray(ob.HEADER.pack(4, 0, 4, 0)))


def test_buckets_count_only_the_measured_seconds() -> None:
    b = ob.Buckets(3)
    b.add(0.5, 7)  # before t0 is set: warm-up
    b.t0 = 10.0
    b.add(9.9, 1)
    b.add(10.0, 2)
    b.add(11.99, 3)
    b.add(12.5, 4)
    b.add(13.0, 5)
    assert (b.before, b.counts, b.after) == (8, [2, 3, 4], 5)


# -- the switch's side of the handshake ----------------------------------------------------------

def test_switch_replies_decode_with_the_platform() -> None:
    fr = parse(ob.features_reply(5, dpid=0xABCDEF))
    assert isinstance(fr, PARSER.OFPSwitchFeatures)
    assert (fr.xid, fr.datapath_id, fr.n_buffers) == (5, 0xABCDEF, 256)
    rr = parse(ob.role_reply(6, OFP.OFPCR_ROLE_MASTER, 2 ** 64 - 1))
    assert (rr.xid, rr.role, rr.generation_id) == (6, OFP.OFPCR_ROLE_MASTER, 2 ** 64 - 1)
    pd = parse(ob.port_desc_reply(7))
    assert isinstance(pd, PARSER.OFPPortDescStatsReply)
    assert (pd.xid, pd.body, pd.flags) == (7, [], 0)
    assert isinstance(parse(ob.barrier_reply(8)), PARSER.OFPBarrierReply)
    gc = parse(ob.get_config_reply(9))
    assert gc.miss_send_len == OFP.OFPCML_NO_BUFFER
    er = parse(ob.echo_reply(10, b"hi"))
    assert (er.xid, bytes(er.data)) == (10, b"hi")
    err = parse(ob.error_msg(11, OFP.OFPET_ROLE_REQUEST_FAILED, OFP.OFPRRFC_STALE, b"q" * 100))
    assert (err.type, err.code, len(err.data)) == (OFP.OFPET_ROLE_REQUEST_FAILED,
                                                   OFP.OFPRRFC_STALE, 64)


def test_decode_controller_requests() -> None:
    req = ob.serialise(ofmsgs.role_request(PROTO, OFP.OFPCR_ROLE_MASTER, 41, 0xE0000005), 0xE0000005)
    assert ob.decode_role_request(req) == (0xE0000005, OFP.OFPCR_ROLE_MASTER, 41)
    mp = ob.serialise(PARSER.OFPPortDescStatsRequest(PROTO, 0), 3)
    assert ob.decode_multipart_request(mp) == (3, OFP.OFPMP_PORT_DESC, 0)


def test_role_state_follows_the_generation_rules() -> None:
    rs = ob.RoleState()
    assert rs.request(OFP.OFPCR_ROLE_NOCHANGE, 99) == (True, OFP.OFPCR_ROLE_EQUAL, 0)
    assert rs.request(OFP.OFPCR_ROLE_MASTER, 1) == (True, OFP.OFPCR_ROLE_MASTER, 1)
    assert rs.request(OFP.OFPCR_ROLE_SLAVE, 0) == (False, OFP.OFPCR_ROLE_MASTER, 1)  # stale
    assert rs.request(OFP.OFPCR_ROLE_NOCHANGE, 0) == (True, OFP.OFPCR_ROLE_MASTER, 1)
    assert rs.request(OFP.OFPCR_ROLE_EQUAL, 0) == (True, OFP.OFPCR_ROLE_EQUAL, 1)
    wrap = ob.RoleState(generation_id=2 ** 64 - 1, generation_known=True)
    assert wrap.request(OFP.OFPCR_ROLE_MASTER, 0)[0]  # 0 follows 2**64-1 (serial arithmetic)


def test_packet_out_template_matches_the_parser() -> None:
    tmpl = ob.PacketOutTemplate()
    assert bytes(tmpl.render(0x55, 0x66)) == ob.packet_out(0x55, 0x66, OFP.OFPP_CONTROLLER)


class FakeTransport:
    def __init__(self) -> None:
        self.out = bytearray()
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.out += data

    def abort(self) -> None:
        self.aborted = True

    def take(self) -> List[Any]:
        raws = messages(bytes(self.out))
        self.out.clear()
        return [parse(r) if r[1] not in (OFP.OFPT_ECHO_REQUEST,) else r for r in raws]


def test_emulated_switch_handshake_window_and_matching() -> None:
    params = ob.Params(switches=1, hosts=4, window=3, duration_s=2)

    async def scenario() -> None:
        sw = ob.EmulatedSwitch(0, params)
        tr = FakeTransport()
        sw.connection_made(tr)
        assert isinstance(parse(bytes(tr.out)), PARSER.OFPHello)
        tr.out.clear()
        sw.data_received(ob.serialise(PARSER.OFPHello(PROTO), 1)
                         + ob.serialise(PARSER.OFPFeaturesRequest(PROTO), 2))
        (fr,) = tr.take()
        assert fr.datapath_id == 1 and fr.xid == 2
        # the port-description request arrives split across two reads
        pd_req = ob.serialise(PARSER.OFPPortDescStatsRequest(PROTO, 0), 3)
        sw.data_received(pd_req[:5])
        assert not tr.out
        sw.data_received(pd_req[5:] + ob.serialise(ofmsgs.role_request(
            PROTO, OFP.OFPCR_ROLE_NOCHANGE, 0, 0xE0000001), 0xE0000001))
        pd, fence, rr = messages(bytes(tr.out))
        tr.out.clear()
        assert isinstance(parse(pd), PARSER.OFPPortDescStatsReply)
        assert ob.HEADER.unpack_from(fence)[1::2] == (OFP.OFPT_ECHO_REQUEST, ob.FENCE_XID)
        assert (parse(rr).role, parse(rr).xid) == (OFP.OFPCR_ROLE_EQUAL, 0xE0000001)
        assert not sw.ready
        sw.data_received(ob.echo_reply(ob.FENCE_XID, b"ofbench"))
        assert sw.ready
        pins = tr.take()
        assert [m.buffer_id for m in pins] == [1, 2, 3] and sw.sent == 3
        # answers: PACKET_OUT for 2, FLOW_MOD with buffer 1, a FLOW_MOD without buffer, a stray
        fm = ofmsgs.flow_add(PROTO, 10, PARSER.OFPMatch(in_port=1), [ofmsgs.output(PROTO, 2)])
        no_buf = ob.serialise(fm, 20)
        fm.buffer_id = 1
        answers = (ob.packet_out(21, 2, 1) + ob.serialise(fm, 22) + no_buf
                   + ob.packet_out(23, 999, 1))
        sw.data_received(answers[:30])
        sw.data_received(answers[30:])
        refill = tr.take()
        assert [m.buffer_id for m in refill] == [4, 5]
        assert (sw.flow_mods, sw.stray, sw.sent, len(sw.book)) == (2, 1, 5, 3)
        assert sw.buckets.before == 2
        sw.data_received(ob.serialise(PARSER.OFPBarrierRequest(PROTO), 30))
        (br,) = tr.take()
        assert isinstance(br, PARSER.OFPBarrierReply) and br.xid == 30
        sw.data_received(ob.HEADER.pack(4, OFP.OFPT_PACKET_OUT, 3, 0))  # bad length
        assert tr.aborted and sw.closed

    asyncio.run(scenario())


def test_generator_against_null_responder_over_loopback() -> None:
    """The whole path in one process: handshake, fence, window, answers counted per second."""
    params = ob.Params(switches=2, hosts=5, window=4, warmup_s=0.1, duration_s=1)

    async def scenario() -> dict:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(ob.NullController, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await ob.drive("127.0.0.1", port, params)
        finally:
            server.close()
            await server.wait_closed()

    res = asyncio.run(scenario())
    assert len(res["per_second"]) == 1 and res["per_second"][0] > 100
    assert res["answers"] == sum(map(sum, res["per_switch_per_second"]))
    assert res["stray_answers"] == res["lost"] == 0
    assert res["outstanding_at_end"] <= params.switches * params.window
    assert set(res["cpu_cores_used"]) >= {"generator", "other", "wall_s"}


# -- targets, options and statistics -------------------------------------------------------------

def test_parse_target() -> None:
    assert ob.parse_target("osken") == ("osken", None)
    assert ob.parse_target("tcp:127.0.0.1:6653") == ("tcp", ("127.0.0.1", 6653))
    assert ob.parse_target("tcp:localhost:6653") == ("tcp", ("127.0.0.1", 6653))
    for bad in ("tcp:10.0.0.1:6653", "tcp:127.0.0.1:0", "tcp:127.0.0.1", "floodlight"):
        with pytest.raises(ValueError):
            ob.parse_target(bad)


def test_parse_app_conf() -> None:
    assert ob.parse_app_conf(["install_flows=false", " commit_batch = 64"]) == {
        "install_flows": "false", "commit_batch": "64"}
    with pytest.raises(ValueError):
        ob.parse_app_conf(["install_flows"])


def test_summary_and_headline() -> None:
    def run(target: str, secs: List[int], error: bool = False) -> dict:
        r = {"target": target, "per_second": secs, "answers_per_s": sum(secs) / len(secs)}
        if error:
            r["error"] = "boom"
        return r

    runs = [run("null", [100, 300]), run("null", [200, 200]), run("osken", [10, 30, 20]),
            run("osken", [999], error=True), run("ryu", [1], error=True)]
    summary, headline = ob.summarise_runs(["null", "osken", "ryu"], runs)
    assert headline == {"packet_ins_per_s": 20.0, "generator_ceiling_per_s": 200.0}
    assert summary["osken"]["runs_failed"] == 1 and summary["osken"]["n"] == 3
    assert summary["ryu"]["median"] is None
    _, h2 = ob.summarise_runs(["tcp:127.0.0.1:1"], [run("tcp:127.0.0.1:1", [5, 7])])
    assert h2 == {"packet_ins_per_s": None, "generator_ceiling_per_s": None,
                  "packet_ins_per_s_tcp": 6.0}


def test_common_statistics() -> None:
    s = common.summarize([4, 1, 3, 2])
    assert (s["n"], s["median"], s["min"], s["max"], s["mean"]) == (4, 2.5, 1.0, 4.0, 2.5)
    assert common.percentile([0.0, 10.0], 25) == 2.5
    assert common.summarize([])["median"] is None


def test_common_json_and_headline(tmp_path: Any, capsys: Any) -> None:
    doc = common.result_document("x", True, [{"name": "a"}], [{"per_second": [1]}], {}, {"k": 1})
    path = common.write_json(tmp_path / "out" / "x.json", doc)
    assert json.loads(path.read_text())["runs"] == [{"per_second": [1]}]
    assert not list((tmp_path / "out").glob("*.tmp"))
    print("noise")
    common.print_headline({"packet_ins_per_s": 1.5})
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"packet_ins_per_s": 1.5}


def test_common_progress_goes_to_the_given_stream() -> None:
    buf = io.StringIO()
    p = common.Progress("ofbench", 2, stream=buf)
    p.start("null")
    p.finish("1 answers/s")
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[ofbench 1/2 ") and lines[0].endswith("] null")
    assert "1/2 done" in lines[1]
