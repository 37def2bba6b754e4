"""The LIME shim on real OVS: the learning app, unchanged but for where its events come from, runs
on logical switches; s3 is cloned onto s3p and retired while h1 pings h2, and no ping is lost."""
from __future__ import annotations

import re
import subprocess

import pytest

from sdnmig import lime_lab
from sdnmig.lab import ping, poll, rx_packets
from sdnmig.lime_lab import lime_op, port_of, shim_flows  # noqa: F401 -- also other tests' helpers
from topologies.testbeds import spare_dpid


def tx_packets(intf: str) -> int:
    with open(f"/sys/class/net/{intf}/statistics/tx_packets") as f:
        return int(f.read())


def start_lime(controllers, mininet, idle: int = 0):
    return lime_lab.start(controllers, mininet, flow_idle_timeout=str(idle))


def reached(topo, net):
    """Switch names without the prefix, and h1, h2 once h1 reaches h2 through the shim."""
    h1, h2 = (net.get(h) for h in topo.hosts())
    poll(lambda: ping(h1, h2, count=2, interval=0.2)["received"] == 2 or None, 15,
         "h1 reaching h2 through the shim")
    return {n.replace(topo.prefix, ""): n for n in topo.switches()}, h1, h2


@pytest.fixture
def lime_net(controllers, mininet):
    return start_lime(controllers, mininet)


def test_clone_and_retire_s3_while_h1_pings_h2_loses_nothing(lime_net):
    topo, c1, net = lime_net
    name, h1, h2 = reached(topo, net)
    s3, s3p = name["s3"], name["s3p"]
    # s3 is direct (no migration touched it yet): the learning app's rules are on it as sent
    assert lime_lab.flows(s3) and not shim_flows(s3) and not shim_flows(s3p)

    h1.sendCmd(f"ping -n -c 2500 -i 0.002 -W 1 {h2.IP()}")
    start = rx_packets(h2)
    poll(lambda: rx_packets(h2) >= start + 100, 10, "pings flowing before the clone")
    req = lime_lab.s3_request(topo, net)
    got = lime_op(c1, op="clone", **req)
    assert got["ok"], got
    assert got["instances"] == [3, spare_dpid(3)]
    assert shim_flows(s3p), "the clone has the rules"
    status = lime_op(c1, op="status")
    assert status["switches"]["0x3"] == ["0x103", "0x3"]
    poll(lambda: tx_packets(f"{s3p}-eth2") >= 100, 10, "pings through the clone")
    bad = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports=req["ports"])
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
    name, h1, h2 = reached(topo, net)
    s3p = name["s3p"]
    assert lime_op(c1, op="clone", **lime_lab.s3_request(topo, net))["ok"]
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
    assert not bad["ok"] and "already in use" in bad["error"], bad
    bad = lime_op(c1, op="clone", switch=3, onto=0x999, ports={1: 1, 2: 2})
    assert not bad["ok"] and "not a spare" in bad["error"], bad
    bad = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports={1: 1})
    assert not bad["ok"] and "every port" in bad["error"], bad
    bad = lime_op(c1, op="retire", switch=3, instance=3)
    assert not bad["ok"] and "last instance" in bad["error"], bad
    bad = lime_op(c1, op="fly", switch=3)
    assert not bad["ok"] and "unknown operation" in bad["error"], bad
    ports = lime_lab.s3_request(topo, net)["ports"]
    bad = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports=ports,
                  neighbours=[[1, port_of(net, s1, s3), 0]])
    assert not bad["ok"] and "not a free port" in bad["error"], bad
    bad = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3), ports={**ports, 1: 77})
    assert not bad["ok"] and "no port 77" in bad["error"], bad
    assert lime_op(c1, op="status") == before
    assert not shim_flows(s3p)


def test_a_rule_the_switch_expired_is_not_cloned(controllers, mininet):
    """One instance: the switch keeps the app's timeouts (it is direct: the rules are the app's
    own); a clone made later adopts what the switch holds then, not rules that had expired."""
    topo, c1, net = start_lime(controllers, mininet, idle=1)
    name, h1, h2 = reached(topo, net)
    s3, s3p = name["s3"], name["s3p"]
    assert len(lime_lab.flows(s3)) == 3  # table-miss + one learnt rule per direction
    poll(lambda: len(lime_lab.flows(s3)) == 1, 10, "the learnt rules expiring on s3")
    got = lime_op(c1, op="clone", switch=3, onto=spare_dpid(3),
                  ports=lime_lab.s3_request(topo, net)["ports"])
    assert got["ok"], got
    assert len(shim_flows(s3p)) == 1, shim_flows(s3p)


def test_freeze_and_copy_moves_s3_and_loses_pings(lime_net):
    """The baseline behind the same command: it gets s3 onto s3p too, but traffic through s3 is
    lost while the switch is stopped and copied (the comparison in experiments/lime.py is real)."""
    topo, c1, net = lime_net
    name, h1, h2 = reached(topo, net)
    s1, s2, s3, s3p = (name[n] for n in ("s1", "s2", "s3", "s3p"))
    req = lime_lab.s3_request(topo, net)
    bad = lime_op(c1, op="freeze", switch=3, onto=spare_dpid(3), ports={}, tunnels={
        str(port_of(net, s3, s1)): [1, 1], str(port_of(net, s3, s2)): [2, 2]})
    assert not bad["ok"], bad
    h1.sendCmd(f"ping -n -c 1500 -i 0.001 -W 1 {h2.IP()}")
    start = rx_packets(h2)
    poll(lambda: rx_packets(h2) >= start + 100, 10, "pings flowing before the freeze")
    got = lime_op(c1, op="freeze", **req)
    assert got["ok"] and got["instances"] == [spare_dpid(3)], got
    out = h1.waitOutput()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m and int(m.group(2)) < int(m.group(1)), f"freeze and copy lost nothing: {out}"
    assert not shim_flows(s3) and shim_flows(s3p)
    bad = lime_op(c1, op="clone", switch=2, onto=spare_dpid(3), ports={})
    assert not bad["ok"] and "already in use" in bad["error"], bad
    subprocess.run(["ovs-vsctl", "set", "interface", f"{s3}-eth1", "admin_state=down"], check=True)
    assert ping(h1, h2, count=5, interval=0.05)["received"] == 5  # through s3p
