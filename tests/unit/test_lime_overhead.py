"""lime_overhead's requests and statistics, and the ofbench modes it needs (no-buffer answers
matched by the id in the frame, described ports, idle spares, a setup before the first packet-in).
No root; one in-process loopback exchange with ofbench's null responder."""
from __future__ import annotations

import asyncio
import struct
from typing import Any, Dict, List

from experiments import lime_overhead as lo
from experiments import ofbench as ob
from ryu_apps import ofmsgs

from test_ofbench import FakeTransport, parse  # noqa: E402  (tests/unit is on the path)
from test_ofbench import messages as split  # noqa: E402

OFP, PARSER, PROTO = ob.OFP, ob.PARSER, ob.PROTO


# -- ofbench: no-buffer mode, ports, spares --------------------------------------------------------

def test_no_buffer_packet_ins_carry_the_id_in_the_frame() -> None:
    fac = ob.PacketInFactory(switch=1, hosts=3, no_buffer=True)
    raws = split(bytes(fac.batch([5, 6, 0xFFFFFFFE])))
    for seq, (pid, raw) in enumerate(zip([5, 6, 0xFFFFFFFE], raws)):
        msg = parse(raw)
        src, dst = ob.traffic_pair(seq, 3)
        assert (msg.xid, msg.buffer_id) == (pid, OFP.OFP_NO_BUFFER)
        assert ob.frame_id_of(msg.data, 0, len(msg.data)) == pid
        assert bytes(msg.data[6:12]) == ob.host_mac(1, src)
        assert bytes(msg.data[0:6]) == ob.host_mac(1, dst)


def test_frame_id_skips_a_vlan_tag_and_refuses_short_frames() -> None:
    frame = ob.ethernet_frame(ob.host_mac(0, 1), ob.host_mac(0, 2), 0xCAFE)
    tagged = frame[:12] + b"\x81\x00\x00\x05" + frame[12:]
    assert ob.frame_id_of(tagged, 0, len(tagged)) == 0xCAFE
    assert ob.frame_id_of(b"x" + frame, 1, 1 + len(frame)) == 0xCAFE
    assert ob.frame_id_of(frame, 0, 16) is None


def test_port_description_lists_hosts_and_the_link_port() -> None:
    pd = parse(ob.port_desc_reply(7, (1, 2, 3), dpid=0x101))
    assert [p.port_no for p in pd.body] == [1, 2, 3]
    assert all(p.state == OFP.OFPPS_LIVE and p.config == 0 for p in pd.body)
    assert pd.body[0].name == b"ofb101-1"
    assert ob.link_port(100) == 101 and ob.spare_dpid(3) == 0x103


def _handshake(sw: ob.EmulatedSwitch, tr: FakeTransport) -> List[bytes]:
    sw.data_received(ob.serialise(PARSER.OFPFeaturesRequest(PROTO), 2)
                     + ob.serialise(PARSER.OFPPortDescStatsRequest(PROTO, 0), 3))
    sw.data_received(ob.echo_reply(ob.FENCE_XID, b"ofbench"))
    out = split(bytes(tr.out))
    tr.out.clear()
    return out


def test_no_buffer_answers_are_matched_by_the_frame_id_vlan_actions_included() -> None:
    params = ob.Params(switches=1, hosts=4, window=2, no_buffer=True, ports=True)

    async def scenario() -> None:
        sw = ob.EmulatedSwitch(0, params)
        tr = FakeTransport()
        sw.connection_made(tr)
        tr.out.clear()
        replies = _handshake(sw, tr)  # the window opens when the fence comes back
        assert [p.port_no for p in parse(replies[1]).body] == [1, 2, 3, 4, 5]
        pins = [parse(r) for r in replies[3:]]
        assert [m.buffer_id for m in pins] == [OFP.OFP_NO_BUFFER] * 2
        tunnel = [PARSER.OFPActionPushVlan(), PARSER.OFPActionSetField(vlan_vid=0x1005),
                  PARSER.OFPActionOutput(5, 0), PARSER.OFPActionPopVlan()]
        answer = ob.serialise(PARSER.OFPPacketOut(PROTO, buffer_id=OFP.OFP_NO_BUFFER, in_port=1,
                                                  actions=tunnel, data=pins[1].data), 40)
        fm = ob.serialise(ofmsgs.flow_add(PROTO, 10, PARSER.OFPMatch(in_port=1),
                                          [ofmsgs.output(PROTO, 2)]), 41)
        again = ob.packet_out(42, OFP.OFP_NO_BUFFER, 1, pins[1].data)  # already answered
        sw.data_received(fm + answer + again + ob.packet_out(43, OFP.OFP_NO_BUFFER, 1, b"short"))
        assert (sw.flow_mods, sw.packet_outs, sw.stray) == (1, 3, 2)
        assert sw.buckets.before == 1 and sw.sent == 3 and set(sw.book.sent) == {1, 3}

    asyncio.run(scenario())


def test_a_spare_answers_but_sends_no_packet_ins() -> None:
    params = ob.Params(switches=2, hosts=3, spares=True)

    async def scenario() -> None:
        sw = ob.EmulatedSwitch(1, params, spare=True)
        tr = FakeTransport()
        sw.connection_made(tr)
        tr.out.clear()
        feat, ports, _fence = _handshake(sw, tr)
        assert parse(feat).datapath_id == 0x102
        assert [p.port_no for p in parse(ports).body] == [1, 2, 3, 4]
        assert sw.ready and not tr.out
        sw.data_received(ob.serialise(PARSER.OFPBarrierRequest(PROTO), 9))
        assert isinstance(parse(bytes(tr.out)), PARSER.OFPBarrierReply)

    asyncio.run(scenario())


def test_drive_runs_the_setup_before_the_first_packet_in() -> None:
    params = ob.Params(switches=2, hosts=5, window=4, warmup_s=0.1, duration_s=1,
                       no_buffer=True, spares=True)
    seen: Dict[str, Any] = {}

    async def setup(switches: List[Any], spares: List[Any]) -> Dict[str, Any]:
        seen["sent"] = sum(sw.sent for sw in switches)
        seen["dpids"] = sorted(sw.dpid for sw in switches + spares)
        return {"ok": True}

    async def scenario() -> dict:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(ob.NullController, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            return await ob.drive("127.0.0.1", port, params, setup=setup)
        finally:
            server.close()
            await server.wait_closed()

    res = asyncio.run(scenario())
    assert seen == {"sent": 0, "dpids": [1, 2, 0x101, 0x102]}
    assert res["setup"] == {"ok": True} and res["per_second"][0] > 50
    assert res["stray_answers"] == res["lost"] == 0
    assert res["spare_packet_outs"] == 0


# -- lime_overhead ---------------------------------------------------------------------------------

def test_clone_requests_name_every_host_port_once() -> None:
    t = lo.clone_request(3, 4, "tunnel")
    assert (t["op"], t["switch"], t["onto"], t["ports"]) == ("clone", 3, 0x103, {})
    assert t["tunnels"] == {str(p): [5, 5] for p in (1, 2, 3, 4)}
    loc = lo.clone_request(3, 4, "local")
    assert loc["ports"] == {"1": 1, "2": 2, "3": 3, "4": 4} and loc["tunnels"] == {}
    conf = lo.shim_conf(ob.Params(switches=2, hosts=4))
    assert conf == {"events": "lime", "lime_spares": "0x101,0x102",
                    "lime_reserved": "1:5,2:5"}


def test_configurations_are_interleaved() -> None:
    assert lo.plan(("a", "b", "c"), 2) == [(0, "a"), (0, "b"), (0, "c"),
                                           (1, "a"), (1, "b"), (1, "c")]


def test_headline_overhead_from_the_medians() -> None:
    def run(config: str, secs: List[int], error: bool = False) -> Dict[str, Any]:
        r: Dict[str, Any] = {"config": config, "per_second": secs,
                             "answers_per_s": sum(secs) / len(secs),
                             "cpu_cores_used": {"other": 0.5, "controller": 0.9}}
        if error:
            r["error"] = "boom"
        return r

    runs = [run("plain", [1000, 1000]), run("shim", [960, 960]), run("cloned", [500, 500]),
            run("shim", [1], error=True)]
    result = {"configs": ["plain", "shim", "cloned"], "runs": runs,
              "samples": {c: [x for r in runs if r["config"] == c and "error" not in r
                              for x in r["per_second"]] for c in ("plain", "shim", "cloned")}}
    summary, headline = lo.summarise(result)
    assert headline["shim_overhead_pct"] == 4.0 and headline["target_met"] is True
    assert headline["cloned_overhead_pct"] == 50.0
    assert headline["packet_ins_per_s_all_cloned_local"] is None
    assert summary["shim"]["runs_failed"] == 1 and headline["foreign_load_cores_median"] == 0.5
    assert lo.overhead_pct(0, 5) is None and lo.overhead_pct(100.0, 110.0) == -10.0
    assert struct.calcsize("!I") == ob.FRAME_ID.size


def test_the_profile_share_counts_only_samples_whose_innermost_frame_is_the_shims() -> None:
    recv = "main (greenthread.py:1);_event_loop (os_ken/base/app_manager.py:289)"
    shim = recv + ";LimeShim._phys_packet_in (lime_shim/app.py:383)"
    collapsed = "\n".join([
        f"{shim} 6",                                                  # the shim's own line
        f"{shim};LearningSwitch._packet_in (app.py:113) 10",          # an app it calls: not
        f"{shim};LogicalDatapath.send_msg (lime_shim/app.py:158) 4",  # own again
        f"{shim};LogicalDatapath.send_msg (lime_shim/app.py:158);"
        "Datapath.send_msg (os_ken/controller/controller.py:432) 5",  # the platform's send: not
        f"{recv} 75",
        "garbage line without a count",
        ""])
    share = lo.shim_share(collapsed, top=1)
    assert share["samples"] == 100 and share["shim_self_samples"] == 10
    assert share["shim_self_pct"] == 10.0
    assert share["busiest_shim_lines"] == [
        {"frame": "LimeShim._phys_packet_in (lime_shim/app.py:383)", "samples": 6}]
    assert lo.shim_share("")["shim_self_pct"] is None
