"""The distributed hypervisor on real OVS: two tenants' learning apps, each on its slice through
the proxy and a hypervisor instance, and the control path moving between instances while
traffic flows. Everything is started the way an operator would, by the management entity."""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from hypervisor import wire
from hypervisor.manage import Manager
from hypervisor.wire import ofp, parser
from sdnmig.hv_lab import Deployment, deploy
from sdnmig.lab import disable_ipv6, poll, unique_prefix
from topologies.testbeds import SlicedTopo

PY = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")


@pytest.fixture
def deployment(controllers: Any, mininet: Any, tmp_path: Path) -> Iterator[Any]:
    made: List[Deployment] = []

    def make(switches: int = 1, t1_addr: str = "") -> Deployment:
        """`t1_addr`: t1's controller is the caller's (a probe), not a learning app."""
        t1 = None if t1_addr else controllers.start(1, ids=["t1"])[0]
        t2, = controllers.start(1, ids=["t2"])
        topo = SlicedTopo(switches=switches, prefix=unique_prefix())
        net = mininet(topo, [])
        disable_ipv6(net)
        d = deploy(net, topo, tmp_path / "hv",
                   {"t1": t1_addr or f"127.0.0.1:{t1.of_port}", "t2": f"127.0.0.1:{t2.of_port}"},
                   wait_tenants=switches if t1_addr else None)
        made.append(d)
        return d

    yield make
    problems = [p for d in made for p in d.teardown()]
    assert not problems, "\n".join(problems)


def _pings_within_slices(d: Deployment, pairs: List[Tuple[str, str]]) -> None:
    for a, b in pairs:
        poll(lambda: d.ping(a, b, 1) == 1, 15, f"{a} reaching {b} through its slice")


def test_each_tenant_forwards_its_own_slice_and_cannot_reach_the_other(deployment: Any
                                                                        ) -> None:
    d = deployment()
    _pings_within_slices(d, [("h1", "h2"), ("h3", "h4")])
    assert d.ping("h1", "h3", 2) == 0 and d.ping("h2", "h4", 2) == 0
    # each tenant's controller learnt its own hosts only, on its own switch connection
    served = d.served_by()
    assert served == {("0x51", "t1"): "hv1", ("0x51", "t2"): "hv1"}
    flows = d.net.get(d.bridge()).ofctl("dump-flows", "--no-names")
    for line in flows.splitlines()[1:]:
        assert "in_port" in line, f"a flow not pinned to a slice's port: {line}"


def test_vlan_slices_share_a_trunk(deployment: Any) -> None:
    d = deployment(switches=2)
    _pings_within_slices(d, [("h1", "h2"), ("h3", "h4")])
    assert d.ping("h1", "h4", 2) == 0 and d.ping("h3", "h2", 2) == 0
    flows = d.net.get(d.bridge("s1")).ofctl("dump-flows", "--no-names")
    assert "push_vlan" in flows and "dl_vlan=10" in flows and "dl_vlan=20" in flows, flows


def _start_frames(d: Deployment, src: str, dst: str, count: int, rate: float, seed: int,
                  tmp: Path) -> Tuple[Any, Any, Path, Path]:
    rx_out, tx_out = tmp / f"rx-{seed}.json", tmp / f"tx-{seed}.json"
    rx = d.host(dst).popen([PY, "-m", "sdnmig.seqframes", "recv", "--iface",
                            d.host(dst).defaultIntf().name, "--seed", str(seed), "--out",
                            str(rx_out)], cwd=str(Path(PY).parents[2]))
    poll(lambda: rx_out.with_name(rx_out.name + ".ready").exists(), 10, "the receiver")
    tx = d.host(src).popen([PY, "-m", "sdnmig.seqframes", "send", "--iface",
                            d.host(src).defaultIntf().name, "--seed", str(seed), "--count",
                            str(count), "--rate", str(rate), "--out", str(tx_out)],
                           cwd=str(Path(PY).parents[2]))
    return tx, rx, tx_out, rx_out


def _collect(tx: Any, rx: Any, rx_out: Path, count: int) -> List[int]:
    assert tx.wait(60) == 0
    deadline = time.monotonic() + 5
    time.sleep(0.5)  # the last packet-outs are on their way: polled below by the file
    rx.send_signal(signal.SIGTERM)
    assert rx.wait(10) == 0
    while time.monotonic() < deadline and not rx_out.exists():
        time.sleep(0.05)
    return json.loads(rx_out.read_text())["seqs"]


def test_a_migration_under_load_loses_duplicates_and_reorders_nothing(deployment: Any,
                                                                      tmp_path: Path) -> None:
    d = deployment()
    _pings_within_slices(d, [("h1", "h2"), ("h3", "h4")])
    count, rate = 1500, 300.0    # 5 s of packet-ins and packet-outs on each slice
    runs = [_start_frames(d, "h1", "h2", count, rate, 11, tmp_path),
            _start_frames(d, "h3", "h4", count, rate, 12, tmp_path)]
    time.sleep(2.0)
    answer = d.m.migrate(d.bridge(), "hv2")
    assert answer["set_controller"], answer
    assert set(answer["tenants"].values()) == {"active"}, answer
    for tx, rx, _tx_out, rx_out in runs:
        seqs = _collect(tx, rx, rx_out, count)
        assert seqs == list(range(count)), (
            f"{len(seqs)} of {count} frames; missing {sorted(set(range(count)) - set(seqs))[:10]}"
            f", twice {len(seqs) - len(set(seqs))}, in order {seqs == sorted(seqs)}")
    assert d.served_by() == {("0x51", "t1"): "hv2", ("0x51", "t2"): "hv2"}
    ctl = d.net.get(d.bridge()).vsctl("get-controller", d.bridge())
    assert f"tcp:127.0.0.1:{d.ports['hv2']}" in ctl and f"ptcp:{d.ports['passive0']}" in ctl
    # and back: the instance that gave the switch up takes it over again
    answer = d.m.migrate(d.bridge(), "hv1")
    assert answer["set_controller"], answer
    _pings_within_slices(d, [("h2", "h1"), ("h4", "h3")])


class Probe:
    """A tenant controller that is a test: it listens, takes the proxy's connection, and sends
    what the test says, reading the answers synchronously."""

    def __init__(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.server.settimeout(20)
        self.addr = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.sock: Any = None
        self.buf = b""
        self.seen: Counter = Counter()

    def accept(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock, _ = self.server.accept()
        self.sock.settimeout(5)
        self.buf = b""
        self.send(wire.hello())
        assert self.recv_type(ofp.OFPT_HELLO)

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def recv(self, timeout: float = 5.0) -> Any:
        """The next message (raw bytes), or None at the timeout; b"" when closed."""
        self.sock.settimeout(timeout)
        while len(self.buf) < 8 or len(self.buf) < struct.unpack_from("!H", self.buf, 2)[0]:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except OSError:
                return b""
            if not chunk:
                return b""
            self.buf += chunk
        n = struct.unpack_from("!H", self.buf, 2)[0]
        raw, self.buf = self.buf[:n], self.buf[n:]
        self.seen[raw[1]] += 1
        return raw

    def recv_type(self, msg_type: int, xid: Any = None, timeout: float = 5.0) -> Any:
        """The next message of this type (and xid), other messages skipped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = self.recv(deadline - time.monotonic())
            if not raw:
                return raw
            if raw[1] == msg_type and (xid is None or wire.header(raw)[3] == xid):
                return raw
        return None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.server.close()


@pytest.fixture
def probe() -> Iterator[Probe]:
    p = Probe()
    yield p
    p.close()


def _request(probe: Probe, msg: Any, xid: int, reply_type: int) -> Any:
    probe.send(wire.encode(msg, xid))
    raw = probe.recv_type(reply_type, xid)
    assert raw, f"no answer of type {reply_type} to xid {xid}"
    return wire.decode(raw)


def test_a_tenant_sees_and_touches_its_slice_only(deployment: Any, probe: Probe) -> None:
    d = deployment(t1_addr=probe.addr)
    probe.accept()
    _pings_within_slices(d, [("h3", "h4")])     # t2's learning app installed its flows
    D = wire.DESC
    # a rule matching t2's port: refused with an OpenFlow error, nothing installed
    bad = parser.OFPFlowMod(D, priority=5, match=parser.OFPMatch(in_port=3),
                            instructions=[parser.OFPInstructionActions(
                                ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(1)])])
    err = _request(probe, bad, 101, ofp.OFPT_ERROR)
    assert (err.type, err.code) == (ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_VALUE)
    out_bad = parser.OFPFlowMod(D, priority=5, match=parser.OFPMatch(in_port=1),
                                instructions=[parser.OFPInstructionActions(
                                    ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(4)])])
    err = _request(probe, out_bad, 102, ofp.OFPT_ERROR)
    assert (err.type, err.code) == (ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT)
    # a match-all flood becomes a flood within the slice, one rule per slice port
    flood = parser.OFPFlowMod(D, priority=7, cookie=0x77, match=parser.OFPMatch(),
                              instructions=[parser.OFPInstructionActions(
                                  ofp.OFPIT_APPLY_ACTIONS,
                                  [parser.OFPActionOutput(ofp.OFPP_FLOOD)])])
    probe.send(wire.encode(flood, 103))
    _request(probe, parser.OFPBarrierRequest(D), 104, ofp.OFPT_BARRIER_REPLY)
    flows = d.net.get(d.bridge()).ofctl("dump-flows", "--no-names")
    mine = [ln for ln in flows.splitlines() if "cookie=0x77" in ln]
    assert len(mine) == 2 and all("in_port=1" in ln or "in_port=2" in ln for ln in mine), flows
    assert all("output:3" not in ln and "output:4" not in ln for ln in mine), mine
    # its statistics: its ports and its flows only
    ports = _request(probe, parser.OFPPortStatsRequest(D, 0, ofp.OFPP_ANY), 105,
                     ofp.OFPT_MULTIPART_REPLY)
    assert sorted(p.port_no for p in ports.body) == [1, 2]
    stats = _request(probe, parser.OFPFlowStatsRequest(D), 106, ofp.OFPT_MULTIPART_REPLY)
    assert stats.body and all(s.match["in_port"] in (1, 2) for s in stats.body)
    err = _request(probe, parser.OFPPortStatsRequest(D, 0, 3), 107, ofp.OFPT_ERROR)
    assert (err.type, err.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM)
    err = _request(probe, parser.OFPTableStatsRequest(D, 0), 108, ofp.OFPT_ERROR)
    assert err.code == ofp.OFPBRC_BAD_MULTIPART
    # a delete-all deletes its own rules, never t2's
    probe.send(wire.encode(parser.OFPFlowMod(D, command=ofp.OFPFC_DELETE, out_port=ofp.OFPP_ANY,
                                             out_group=ofp.OFPG_ANY, match=parser.OFPMatch()),
                           109))
    _request(probe, parser.OFPBarrierRequest(D), 110, ofp.OFPT_BARRIER_REPLY)
    flows = d.net.get(d.bridge()).ofctl("dump-flows", "--no-names")
    assert "cookie=0x77" not in flows and "in_port=3" in flows, flows
    assert d.ping("h3", "h4", 2) == 2
    # its packet-ins come from its ports only: h3's traffic never reaches it
    miss = parser.OFPFlowMod(D, priority=0, match=parser.OFPMatch(),
                             instructions=[parser.OFPInstructionActions(
                                 ofp.OFPIT_APPLY_ACTIONS,
                                 [parser.OFPActionOutput(ofp.OFPP_CONTROLLER)])])
    probe.send(wire.encode(miss, 111))
    _request(probe, parser.OFPBarrierRequest(D), 112, ofp.OFPT_BARRIER_REPLY)
    probe.seen.clear()
    d.host("h3").cmd(f"ping -c 3 -i 0.2 -W 1 {d.host('h4').IP()}")
    d.host("h1").cmd("ping -c 1 -W 1 10.0.0.99")
    pin = probe.recv_type(ofp.OFPT_PACKET_IN, timeout=5)
    assert pin, "t1 got no packet-in for h1's traffic"
    assert wire.decode(pin).match["in_port"] in (1, 2)
    while True:
        raw = probe.recv_type(ofp.OFPT_PACKET_IN, timeout=1)
        if not raw:
            break
        assert wire.decode(raw).match["in_port"] in (1, 2)


@pytest.mark.parametrize("bad", ["short_length", "unknown_type", "truncated_body",
                                 "oversized_body", "hello_flood"])
def test_malformed_openflow_from_a_tenant_hurts_that_tenant_only(deployment: Any,
                                                                  probe: Probe,
                                                                  bad: str) -> None:
    d = deployment(t1_addr=probe.addr)
    probe.accept()
    _pings_within_slices(d, [("h3", "h4")])
    if bad == "short_length":        # the stream cannot be framed past it: closed, then the
        probe.send(struct.pack("!BBHI", 4, ofp.OFPT_BARRIER_REQUEST, 4, 1))   # proxy comes back
        assert probe.recv(5) == b""
        probe.accept()
    elif bad == "unknown_type":
        probe.send(struct.pack("!BBHI", 4, 99, 8, 5))
        err = wire.decode(probe.recv_type(ofp.OFPT_ERROR, 5))
        assert (err.type, err.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)
    elif bad == "truncated_body":    # a FLOW_MOD of its header only
        probe.send(struct.pack("!BBHI", 4, ofp.OFPT_FLOW_MOD, 8, 6))
        err = wire.decode(probe.recv_type(ofp.OFPT_ERROR, 6))
        assert (err.type, err.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN)
    elif bad == "oversized_body":    # a PACKET_OUT whose actions run past its end
        raw = bytearray(wire.encode(parser.OFPPacketOut(
            wire.DESC, buffer_id=ofp.OFP_NO_BUFFER, in_port=ofp.OFPP_CONTROLLER,
            actions=[parser.OFPActionOutput(1)], data=b"x" * 60), 7))
        struct.pack_into("!H", raw, 16, 4000)
        probe.send(bytes(raw))
        err = wire.decode(probe.recv_type(ofp.OFPT_ERROR, 7))
        assert err.type == ofp.OFPET_BAD_REQUEST
    else:
        try:
            for _ in range(20):
                probe.send(wire.hello())
        except OSError:
            pass  # closed before the last ones
        assert probe.recv_type(-1, timeout=5) == b""   # closed after too many
        probe.accept()
    # the tenant carries on (its switch answers) and the other slice never noticed
    reply = _request(probe, parser.OFPFeaturesRequest(wire.DESC), 200, ofp.OFPT_FEATURES_REPLY)
    assert reply.datapath_id == 0x51
    assert d.ping("h3", "h4", 2) == 2
    assert d.served_by() == {("0x51", "t1"): "hv1", ("0x51", "t2"): "hv1"}


def _fake_switch(port: int, dpid: int) -> socket.socket:
    """A switch that does the handshake: HELLO, then FEATURES_REPLY for `dpid`."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(wire.hello())
    buf = b""
    while True:
        buf += s.recv(4096)
        while len(buf) >= 8 and len(buf) >= struct.unpack_from("!H", buf, 2)[0]:
            n = struct.unpack_from("!H", buf, 2)[0]
            raw, buf = buf[:n], buf[n:]
            if raw[1] == ofp.OFPT_FEATURES_REQUEST:
                s.sendall(struct.pack("!BBHIQIBB2xII", 4, ofp.OFPT_FEATURES_REPLY, 32,
                                      wire.header(raw)[3], dpid, 0, 1, 0, 0, 0))
                return s


def _closed_by_peer(s: socket.socket, timeout: float = 10.0) -> bool:
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
        return True
    except socket.timeout:
        return False
    except OSError:
        return True
    finally:
        s.close()


def test_malformed_openflow_from_a_switch_closes_that_connection_only(deployment: Any) -> None:
    d = deployment()
    _pings_within_slices(d, [("h1", "h2"), ("h3", "h4")])
    port = d.ports["hv1"]
    s = socket.create_connection(("127.0.0.1", port), timeout=5)   # under a header's length
    s.sendall(struct.pack("!BBHI", 4, 0, 4, 0))
    assert _closed_by_peer(s)
    for garbage in (struct.pack("!BBHI", 4, ofp.OFPT_PACKET_IN, 12, 0) + b"\0" * 4,  # no body
                    struct.pack("!BBHI", 4, ofp.OFPT_PORT_STATUS, 8, 0),            # likewise
                    struct.pack("!BBHI", 4, 200, 8, 0) + struct.pack("!BBHI", 4, 0, 2, 0)):
        s = _fake_switch(port, 0x99)
        s.sendall(garbage)
        assert _closed_by_peer(s), garbage.hex()
    assert d.ping("h1", "h2", 2) == 2 and d.ping("h3", "h4", 2) == 2
    assert d.m.status()["instances"]["hv1"]["status"]["errors"] == []


def _pid(d: Deployment, name: str) -> int:
    return d.m.read().instances[name].pid


def _migrate_in_background(d: Deployment, to: str) -> Tuple[Any, Dict[str, Any]]:
    import threading
    result: Dict[str, Any] = {}

    def go() -> None:
        try:
            result.update(d.m.migrate(d.bridge(), to, timeout=15))
        except Exception as exc:  # noqa: BLE001  the test reads it
            result["error"] = str(exc)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, result


def test_the_target_dying_mid_migration_leaves_the_initial_serving(deployment: Any) -> None:
    d = deployment()
    _pings_within_slices(d, [("h1", "h2"), ("h3", "h4")])
    os.kill(_pid(d, "hv1"), signal.SIGSTOP)     # the initial cannot put its marker down yet
    try:
        thread, result = _migrate_in_background(d, "hv2")
        poll(lambda: d.routes() == ["rerouted", "rerouted"], 10, "the target asking the proxy")
        os.kill(_pid(d, "hv2"), signal.SIGKILL)
    finally:
        os.kill(_pid(d, "hv1"), signal.SIGCONT)
    thread.join(30)
    assert not result.get("set_controller"), result
    poll(lambda: d.routes() == ["direct", "direct"], 10, "the proxy going back")
    assert d.served_by() == {("0x51", "t1"): "hv1", ("0x51", "t2"): "hv1"}
    _pings_within_slices(d, [("h2", "h1"), ("h4", "h3")])
    ctl = d.net.get(d.bridge()).vsctl("get-controller", d.bridge())
    assert f"tcp:127.0.0.1:{d.ports['hv1']}" in ctl, ctl      # the configuration unchanged
    d.m.start("hv2")   # for the fixture's orderly stop


def test_the_initial_dying_mid_migration_lets_the_target_complete(deployment: Any) -> None:
    d = deployment()
    _pings_within_slices(d, [("h1", "h2"), ("h3", "h4")])
    os.kill(_pid(d, "hv1"), signal.SIGSTOP)
    thread, result = _migrate_in_background(d, "hv2")
    poll(lambda: d.routes() == ["rerouted", "rerouted"], 10, "the target asking the proxy")
    os.kill(_pid(d, "hv1"), signal.SIGKILL)
    thread.join(30)
    assert result.get("set_controller") and set(result["tenants"].values()) == {"active"}, result
    assert d.served_by() == {("0x51", "t1"): "hv2", ("0x51", "t2"): "hv2"}
    _pings_within_slices(d, [("h2", "h1"), ("h4", "h3")])
    d.m.start("hv1")


def test_a_proxy_restart_lets_the_tenants_reconnect_and_carry_on(deployment: Any) -> None:
    d = deployment()
    _pings_within_slices(d, [("h1", "h2"), ("h3", "h4")])
    d.m.proxy_stop()
    d.m.proxy_start(f"127.0.0.1:{d.ports['proxy']}")
    poll(lambda: [t["tenant_connected"] for t in d.proxy().get("tenancies", [])] == [True, True],
         20, "the instances re-attached and the tenants reconnected")
    # flows stay: pings flow; new hosts are learnt through the new connections
    for h in ("h1", "h2", "h3", "h4"):
        d.host(h).cmd("ip neigh flush all")
    _pings_within_slices(d, [("h2", "h1"), ("h4", "h3")])
    assert d.served_by() == {("0x51", "t1"): "hv1", ("0x51", "t2"): "hv1"}
    # the management's own state survives it too: a new manager on the same directory
    again = Manager(d.m.root)
    status = again.status()
    assert set(status["instances"]) == {"hv1", "hv2"} and status["proxy"]["alive"], status
    # and the instances are found by their zeroconf adverts, this deployment's only
    poll(lambda: {a["name"] for a in again.discover(3.0)["adverts"] if a["alive"]}
         >= {"hv1", "hv2"}, 20, "hv1 and hv2 advertised")
