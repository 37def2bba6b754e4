"""The Redis-backed learning app forwards on real OVS, under os-ken and under real Ryu."""
from __future__ import annotations

import time

import pytest
import redis

from sdnmig import instances
from ryu_apps.learning.store import macs_key, stats_key
from topologies.testbeds import LinearTopo, TreeTopo

from sdnmig.lab import disable_ipv6, ping, poll, rx_packets, unique_prefix, wait_roles

OF13 = "OpenFlow13"
OF13_15 = "OpenFlow13,OpenFlow14,OpenFlow15"  # negotiates 1.5


def _redis(inst):
    return redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password)


def _pingall_clean(net) -> float:
    """pingall until the first full round trip (ARP, learning) is done; then it must be loss-free."""
    start = time.monotonic()
    loss = net.pingAll(timeout=1)
    if loss:  # the first packets of a cold network may race the table-miss rule: once more
        loss = net.pingAll(timeout=1)
    assert loss == 0.0, f"pingall lost {loss}%"
    return time.monotonic() - start


@pytest.mark.parametrize("protocols", [OF13_15, OF13], ids=["of15", "of13"])
def test_pingall_linear(controllers, mininet, protocols):
    (c1,) = controllers.start(1)
    topo = LinearTopo(k=4, prefix=unique_prefix())
    net = mininet(topo, [c1], protocols=protocols)
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    _pingall_clean(net)
    # The state it acted on is in its Redis, per switch.
    r = _redis(c1)
    host_macs = {net.get(h).MAC().encode() for h in topo.hosts()}
    for n, sw in enumerate(topo.switches(), start=1):
        macs = set(r.hgetall(macs_key(n)))
        assert host_macs <= macs, f"{sw} learnt {macs}"
        assert int(r.hget(stats_key(n), "packet_in")) > 0


def test_pingall_tree(controllers, mininet):
    (c1,) = controllers.start(1)
    topo = TreeTopo(depth=2, fanout=3, prefix=unique_prefix())
    net = mininet(topo, [c1])
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    _pingall_clean(net)


@pytest.mark.ryu
@pytest.mark.parametrize("protocols", [OF13_15, OF13], ids=["of15", "of13"])
def test_pingall_linear_real_ryu(controllers, mininet, ryu_platform, protocols):
    (c1,) = controllers.start(1, platform=ryu_platform)
    topo = LinearTopo(k=4, prefix=unique_prefix())
    net = mininet(topo, [c1], protocols=protocols)
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    _pingall_clean(net)


def test_restart_reloads_state_and_does_not_flood(controllers, mininet):
    """Stop the controller, delete the switches' flows, start it: it forwards from Redis state."""
    (c1,) = controllers.start(1)
    topo = LinearTopo(k=3, n=2, prefix=unique_prefix())
    net = mininet(topo, [c1])
    disable_ipv6(net)
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    _pingall_clean(net)
    r = _redis(c1)
    learnt_before = {n: r.hgetall(macs_key(n)) for n in (1, 2, 3)}
    host_macs = {h.MAC().encode() for h in net.hosts}
    assert all(host_macs <= set(t) for t in learnt_before.values()), learnt_before

    instances.stop_controller(c1)
    for sw in net.switches:
        sw.ofctl("del-flows")  # no learnt flows and no table-miss rule survive
    poll(lambda: not any(sw.ofctl("dump-flows").count("cookie=") for sw in net.switches), 5,
         "flows deleted")
    instances.start_controller(c1)
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    poll(lambda: "priority=0" in net.switches[0].ofctl("dump-flows"), 10, "table-miss rule back")

    src, dst = net.get(topo.prefix + "h1x1"), net.get(topo.prefix + "h3x2")
    bystanders = [h for h in net.hosts if h not in (src, dst)]
    flooded_before = [int(r.hget(stats_key(n), "flooded") or 0) for n in (1, 2, 3)]
    rx_before = {h.name: rx_packets(h) for h in bystanders}
    result = ping(src, dst, count=5)
    assert result["received"] == 5 and result["duplicates"] == 0, result
    rx_after = {h.name: rx_packets(h) for h in bystanders}
    assert rx_after == rx_before, "a host it already knew was flooded to after the restart"
    assert [int(r.hget(stats_key(n), "flooded") or 0) for n in (1, 2, 3)] == flooded_before
    assert {n: r.hgetall(macs_key(n)) for n in (1, 2, 3)} == learnt_before


def test_everything_acted_on_is_in_redis_after_a_crash(controllers, mininet):
    """SIGKILL the controller mid-traffic: every flow it installed is backed by its Redis state."""
    import os
    import re
    import signal

    (c1,) = controllers.start(1)
    topo = TreeTopo(depth=2, fanout=2, prefix=unique_prefix())
    net = mininet(topo, [c1])
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    hosts = net.hosts
    for h in hosts:  # traffic in flight while the controller dies
        h.sendCmd(f"ping -n -c 40 -i 0.01 {hosts[-1 - hosts.index(h)].IP()}")
    poll(lambda: any("priority=10" in sw.ofctl("dump-flows") for sw in net.switches), 10,
         "learnt flows")
    os.kill(c1.controller_pid, signal.SIGKILL)
    for h in hosts:
        h.waitOutput()
    r = _redis(c1)
    checked = 0
    for sw in net.switches:
        table = {k.decode(): int(v) for k, v in r.hgetall(macs_key(int(sw.dpid, 16))).items()}
        for line in sw.ofctl("dump-flows").splitlines():
            m = re.search(r"dl_dst=([0-9a-f:]+).*actions=output:\"?[\w-]*?(\d+)\"?$", line)
            if "priority=10" in line and m:
                checked += 1
                assert table.get(m.group(1)) == int(m.group(2)), (sw.name, line, table)
    assert checked > 0


def test_port_down_forgets_what_it_taught(controllers, mininet):
    """A port going down removes the hosts learnt on it from Redis and the flows through it."""
    (c1,) = controllers.start(1)
    topo = LinearTopo(k=2, n=2, prefix=unique_prefix())
    net = mininet(topo, [c1])
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    _pingall_clean(net)
    s1 = net.get(topo.prefix + "s1")
    gone = net.get(topo.prefix + "h1x1")
    port = s1.ports[s1.connectionsTo(gone)[0][0]]
    r = _redis(c1)
    assert r.hget(macs_key(1), gone.MAC()) == str(port).encode()
    assert f"output:{port}" in s1.ofctl("dump-flows", "--no-names")

    net.configLinkStatus(s1.name, gone.name, "down")
    poll(lambda: r.hget(macs_key(1), gone.MAC()) is None, 10, "host forgotten in Redis")
    poll(lambda: f"output:{port}" not in s1.ofctl("dump-flows", "--no-names"), 10,
         "flows to the dead port deleted")
    # Hosts learnt on other ports stay, and traffic among the rest still flows.
    assert r.hget(macs_key(1), net.get(topo.prefix + "h1x2").MAC()) is not None
    alive = [h for h in net.hosts if h is not gone]
    assert net.ping(alive, timeout=1) == 0.0
