"""The LIME shim on real OVS: the learning app, unchanged but for where its events come from, runs
on logical switches; s3 is cloned onto s3p and retired while h1 pings h2, and no ping is lost."""
from __future__ import annotations

import json
import re
import subprocess
import uuid
from typing import Any, Dict, List

import pytest
import redis

from lime_shim.app import OPS_CHANNEL
from sdnmig.lab import disable_ipv6, ping, poll, rx_packets, unique_prefix, wait_roles
from topologies.testbeds import LimeTopo, spare_dpid

OF15 = "OpenFlow13,OpenFlow14,OpenFlow15"
SHIM_COOKIE = "0x11ae"


def _redis(inst: Any) -> redis.Redis:
    return redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password)


def lime_op(inst: Any, timeout: float = 10.0, **req: Any) -> Dict[str, Any]:
    r = _redis(inst)
    reply = f"lime:reply:{uuid.uuid4().hex}"
    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(reply)
    ps.get_message(timeout=1.0)
    assert r.publish(OPS_CHANNEL, json.dumps({**req, "reply": reply})) == 1, "the shim is not listening"
    msg = poll(lambda: ps.get_message(timeout=0.2), timeout, f"the shim's answer to {req}")
    ps.close()
    return json.loads(msg["data"])


def port_of(net: Any, sw: str, peer: str) -> int:
    """The number of `sw`'s port on its link to `peer`."""
    node, other = net.get(sw), net.get(peer)
    for link in net.linksBetween(node, other):
        intf = link.intf1 if link.intf1.node is node else link.intf2
        return node.ports[intf]
    raise AssertionError(f"no link {sw}-{peer}")


def tx_packets(intf: str) -> int:
    with open(f"/sys/class/net/{intf}/statistics/tx_packets") as f:
        return int(f.read())


def shim_flows(bridge: str) -> List[str]:
    out = subprocess.run(["ovs-ofctl", "-O", OF15, "dump-flows", bridge], check=True,
                         capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if f"cookie={SHIM_COOKIE}" in ln]


def start_lime(controllers, mininet, idle: int = 0):
    topo = LimeTopo(prefix=unique_prefix())
    p = topo.prefix
    reserved = [f"{n}:{topo.port(f'{p}s{n}', f'{p}s3p')[0]}" for n in (1, 2)]  # links to the spare
    (c1,) = controllers.start(1, apps=("lime", "learning"), extra_conf={
        "events": "lime", "lime_spares": hex(spare_dpid(3)), "lime_reserved": ",".join(reserved),
        "flow_idle_timeout": str(idle)})
    net = mininet(topo, [c1], protocols=OF15)
    disable_ipv6(net)
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    return topo, c1, net


@pytest.fixture
def lime_net(controllers, mininet):
    return start_lime(controllers, mininet)


def test_clone_and_retire_s3_while_h1_pings_h2_loses_nothing(lime_net):
    topo, c1, net = lime_net
    name = {n.replace(topo.prefix, ""): n for n in topo.switches()}
    h1, h2 = (net.get(h) for h in topo.hosts())
    first = poll(lambda: ping(h1, h2, count=2, interval=0.2)["received"] == 2 or None, 15,
                 "h1 reaching h2 through the shim")
    assert first
    s1, s2, s3, s3p = (name[n] for n in ("s1", "s2", "s3", "s3p"))
    assert shim_flows(s3) and not shim_flows(s3p), "the learning app's rules are the shim's"

    h1.sendCmd(f"ping -n -c 2500 -i 0.002 -W 1 {h2.IP()}")
    start = rx_packets(h2)
    poll(lambda: rx_packets(h2) >= start + 100, 10, "pings flowing before the clone")
    ports = {port_of(net, s3, s1): port_of(net, s3p, s1), port_of(net, s3, s2): port_of(net, s3p, s2)}
    neighbours = [[1, port_of(net, s1, s3), port_of(net, s1, s3p)],
                  [2, port_of(net, s2, s3), port_of(net, s2, s3p)]]
    got = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports=ports,
                  neighbours=neighbours)
    assert got["ok"], got
    assert got["instances"] == [3, spare_dpid(3)]
    assert shim_flows(s3p), "the clone has the rules"
    status = lime_op(c1, op="status")
    assert status["switches"]["0x3"] == ["0x103", "0x3"]
    poll(lambda: tx_packets(f"{s3p}-eth2") >= 100, 10, "pings through the clone")
    bad = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports=ports)
    assert not bad["ok"] and "already migrating" in bad["error"], bad
    got = lime_op(c1, op="retire", switch=3, instance=3)
    assert got["ok"], got
    assert got["instances"] == [spare_dpid(3)]
    out = h1.waitOutput()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, received = int(m.group(1)), int(m.group(2))
    assert "DUP!" not in out, "a ping was answered twice"
    assert sent == received == 2500, f"lost {sent - received} of {sent} pings"
    assert not shim_flows(s3), "the retired instance keeps no rules"
    # And traffic goes through s3p now: h1 still reaches h2, with s3 out of the path.
    subprocess.run(["ovs-vsctl", "set", "interface", f"{s3}-eth1", "admin_state=down"], check=True)
    assert ping(h1, h2, count=5, interval=0.05)["received"] == 5


def test_retiring_the_clone_rolls_the_migration_back(lime_net):
    topo, c1, net = lime_net
    name = {n.replace(topo.prefix, ""): n for n in topo.switches()}
    h1, h2 = (net.get(h) for h in topo.hosts())
    poll(lambda: ping(h1, h2, count=2, interval=0.2)["received"] == 2 or None, 15, "h1 reaching h2")
    s1, s2, s3, s3p = (name[n] for n in ("s1", "s2", "s3", "s3p"))
    ports = {port_of(net, s3, s1): port_of(net, s3p, s1), port_of(net, s3, s2): port_of(net, s3p, s2)}
    neighbours = [[1, port_of(net, s1, s3), port_of(net, s1, s3p)],
                  [2, port_of(net, s2, s3), port_of(net, s2, s3p)]]
    assert lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports=ports,
                   neighbours=neighbours)["ok"]
    h1.sendCmd(f"ping -n -c 1000 -i 0.002 -W 1 {h2.IP()}")
    poll(lambda: tx_packets(f"{s3p}-eth2") >= 100, 10, "pings through the clone")
    got = lime_op(c1, op="retire", switch=3, instance=spare_dpid(3))
    assert got["ok"] and got["instances"] == [3], got
    out = h1.waitOutput()
    assert "1000 packets transmitted, 1000 received" in out and "DUP!" not in out, out
    assert not shim_flows(s3p)
    subprocess.run(["ovs-vsctl", "set", "interface", f"{s3p}-eth1", "admin_state=down"], check=True)
    assert ping(h1, h2, count=5, interval=0.05)["received"] == 5  # through s3 again
    assert lime_op(c1, op="status")["links"] == {}


def test_bad_operations_are_refused_and_change_nothing(lime_net):
    topo, c1, net = lime_net
    name = {n.replace(topo.prefix, ""): n for n in topo.switches()}
    s1, s3, s3p = name["s1"], name["s3"], name["s3p"]
    before = lime_op(c1, op="status")
    assert not lime_op(c1, op="clone", switch=9, onto=spare_dpid(3), ports={})["ok"]
    bad = lime_op(c1, op="clone", switch=3, onto=1, ports={1: 1, 2: 2})
    assert not bad["ok"] and "not a spare" in bad["error"], bad
    bad = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports={1: 1})
    assert not bad["ok"] and "every port" in bad["error"], bad
    bad = lime_op(c1, op="retire", switch=3, instance=3)
    assert not bad["ok"] and "last instance" in bad["error"], bad
    bad = lime_op(c1, op="fly", switch=3)
    assert not bad["ok"] and "unknown operation" in bad["error"], bad
    ports = {port_of(net, s3, s1): port_of(net, s3p, s1), port_of(net, s3, name["s2"]):
             port_of(net, s3p, name["s2"])}
    bad = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports=ports,
                  neighbours=[[1, port_of(net, s1, s3), 0]])
    assert not bad["ok"] and "not a free port" in bad["error"], bad
    bad = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports={**ports, 1: 77})
    assert not bad["ok"] and "no port 77" in bad["error"], bad
    assert lime_op(c1, op="status") == before
    assert not shim_flows(s3p)


def test_a_rule_the_switch_expired_is_not_cloned(controllers, mininet):
    """One instance: the switch keeps the app's timeouts and tells the shim, whose table follows;
    so a clone made later does not bring back rules that had expired."""
    topo, c1, net = start_lime(controllers, mininet, idle=1)
    name = {n.replace(topo.prefix, ""): n for n in topo.switches()}
    h1, h2 = (net.get(h) for h in topo.hosts())
    poll(lambda: ping(h1, h2, count=2, interval=0.2)["received"] == 2 or None, 15, "h1 reaching h2")
    s3, s3p = name["s3"], name["s3p"]
    assert len(shim_flows(s3)) == 3  # table-miss + one learnt rule per direction
    poll(lambda: len(shim_flows(s3)) == 1, 10, "the learnt rules expiring on s3")
    ports = {port_of(net, s3, name[n]): port_of(net, s3p, name[n]) for n in ("s1", "s2")}
    got = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports=ports)
    assert got["ok"], got
    assert len(shim_flows(s3p)) == 1, shim_flows(s3p)
