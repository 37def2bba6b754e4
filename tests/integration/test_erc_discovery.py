"""Candidates found by zeroconf: on loopback, and with each controller in its own namespace
(the paper's controllers on separate machines, here separate network stacks on a management LAN)."""
from __future__ import annotations

import json

import redis

from sdnmig import ops
from sdnmig.lab import poll, unique_prefix, wait_roles
from topologies.testbeds import MetaTopo

from tests.integration.erc_bench import Bench


def _peers(inst) -> dict:
    r = redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password)
    return {k.decode(): json.loads(v) for k, v in r.hgetall("ctl:peers").items()}


def test_auto_candidates_come_from_zeroconf_on_loopback(controllers, mininet):
    b = Bench(controllers, mininet, n=4, discovery=True,
              conf={c: {"peers": ""} for c in ("c1", "c2", "c3", "c4")})  # no static list
    poll(lambda: set(_peers(b.insts["c1"])) == {"c2", "c3", "c4"}, 20, "c1 to discover c2..c4")
    rec = b.migrate(auto=2)
    assert rec["outcome"] == "committed", rec
    assert len(rec["candidates"]) == 2 and set(rec["candidates"]) <= {"c2", "c3", "c4"}
    b.assert_exactly_once(rec["winner"])


def test_meta_migration_between_controllers_in_separate_namespaces(controllers, namespaced):
    topo = MetaTopo(switches=2, controllers=4, namespaces=True, prefix=unique_prefix())
    net, started = namespaced(topo, 4, apps=("learning", "erc"), bus_host="10.254.0.254")
    c1 = started[0]
    assert [i.id for i in started] == ["c1", "c2", "c3", "c4"]
    data = [s for s in topo.switches() if not s.endswith("m0")]
    wait_roles(net, started, {s: "c1" for s in data})
    poll(lambda: set(_peers(c1)) == {"c2", "c3", "c4"}, 30,
         "zeroconf across namespaces (c1 to see c2..c4)")
    bus = controllers.bus.client()
    poll(lambda: bus.hget("ctl:master", "%016x" % 1) == b"c1", 10, "c1 on the bus")
    h1, h2 = net.get(topo.prefix + "h1"), net.get(topo.prefix + "h2")
    h1.sendCmd(f"ping -n -c 200 -i 0.01 -W 2 {h2.IP()}")
    rec = ops.migrate(bus, 1, auto=3, commit="phase2")
    out = h1.waitOutput()
    assert rec["outcome"] == "committed", rec
    assert sorted(rec["candidates"]) == ["c2", "c3", "c4"]
    assert " 0% packet loss" in out and "DUP!" not in out, out.splitlines()[-2:]
