"""LIME's ensemble on real OVS: s1, s2 and s3 cloned onto their spares as one operation, their
four hosts moved one at a time (make before break), the old switches retired as one operation,
with pings running throughout: none lost while switches are cloned or retired, at most one per
host move. And the refusals the issue names: a clone target in use, retiring a switch that still
has hosts."""
from __future__ import annotations

from sdnmig import lime_lab
from sdnmig.lab import ping, poll
from sdnmig.lime_lab import lime_op, ping_bg, ping_result, shim_flows
from topologies.testbeds import spare_dpid

SW = lime_lab.ENSEMBLE


def test_ensemble_clone_host_moves_and_retire(controllers, mininet):
    topo, c1, net = lime_lab.start(controllers, mininet, ensemble=True)
    hosts = lime_lab.ensemble_hosts(topo, net)
    lime_lab.reach_all(hosts)
    p = topo.prefix
    h1, h2, h3, h4 = hosts
    flows = [ping_bg(h1, h4, 1500, 0.002), ping_bg(h2, h3, 1500, 0.002)]
    poll(lambda: all(f.poll() is None for f in flows) or None, 5, "pings running")
    got = lime_op(c1, op="ensemble", steps=lime_lab.ensemble_steps(topo, net))
    assert got["ok"], got
    assert got["switches"] == {f"{i:#x}": sorted([i, spare_dpid(i)]) for i in SW}
    assert all(shim_flows(f"{p}s{i}p") for i in SW), "every clone has rules"
    for f in flows:
        r = ping_result(f)
        assert r["lost"] == 0 and r["dup"] == 0, r

    # Retiring an old switch while its hosts are still there is refused, and changes nothing.
    before = lime_op(c1, op="status")
    bad = lime_op(c1, op="retire", switch=3, instance=3)
    assert not bad["ok"] and "still has hosts" in bad["error"], bad
    bad = lime_op(c1, op="clone", switch=2, onto=spare_dpid(3), ports={}, tunnels={})
    assert not bad["ok"] and "already migrating" in bad["error"], bad
    assert lime_op(c1, op="status") == before

    # Hosts move one at a time; the others keep pinging the one that moves.
    for host, peer in ((h1, h2), (h2, h3), (h3, h4), (h4, h1)):
        f = ping_bg(peer, host, 1000, 0.001)
        poll(lambda: f.poll() is None or None, 5, "ping running")
        got = lime_lab.move_host(c1, topo, net, host)
        assert got["ok"], got
        r = ping_result(f)
        assert r["lost"] <= 1 and r["dup"] == 0, (host.name, r)

    flows = [ping_bg(h1, h4, 1000, 0.002), ping_bg(h2, h3, 1000, 0.002)]
    poll(lambda: all(f.poll() is None for f in flows) or None, 5, "pings running")
    got = lime_op(c1, op="retire_ensemble", steps=[{"switch": i, "instance": i} for i in SW])
    assert got["ok"], got
    for f in flows:
        r = ping_result(f)
        assert r["lost"] == 0 and r["dup"] == 0, r
    assert not any(shim_flows(f"{p}s{i}") for i in SW), "retired switches keep no rules"
    status = lime_op(c1, op="status")
    assert status["switches"] == {f"{i:#x}": [f"{spare_dpid(i):#x}"] for i in SW}
    # The old network is out of the path: take it down, everyone still reaches everyone.
    for i in SW:
        net.get(f"{p}s{i}").stop(deleteIntfs=False)
    for a in hosts:
        for b in hosts:
            if a is not b:
                assert ping(a, b, count=2, interval=0.05)["received"] == 2, (a.name, b.name)
