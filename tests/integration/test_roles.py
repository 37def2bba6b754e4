"""Roles from the start: one MASTER per switch, the other instances SLAVE, no packet-in answered twice."""
from __future__ import annotations

import threading

import redis

from sdnmig import instances
from topologies.testbeds import LinearTopo

from sdnmig.lab import ping, poll, roles_now, unique_prefix, wait_ovs_roles, wait_roles


def _switch_keys(inst) -> list:
    """Switch state keys (sw:<dpid>:...) in the instance's Redis; ctl:* is its own bookkeeping."""
    r = redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password)
    return r.keys("sw:*")


def test_two_instances_one_master_and_slave_reconnect_answers_nothing(controllers, mininet):
    # Reactive only: every packet is a packet-in, so the slave's reconnect window sees many.
    c1, c2 = controllers.start(2, extra_conf={"install_flows": "false"})
    topo = LinearTopo(k=3, prefix=unique_prefix())
    net = mininet(topo, [c1, c2])
    bridges = topo.switches()
    wait_roles(net, [c1, c2], {s: "c1" for s in bridges})
    assert net.pingAll(timeout=1) == 0.0
    wait_ovs_roles([c1, c2], {s: "c1" for s in bridges})  # OVS's own view lags the controllers'

    # Watch OVS's own view while the slave restarts under a stream of packet-ins.
    seen, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(roles_now(bridges))
            stop.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    h1, h3 = net.get(topo.prefix + "h1"), net.get(topo.prefix + "h3")
    h1.sendCmd(f"ping -n -c 300 -i 0.01 -W 1 {h3.IP()}")
    poll(lambda: int(redis.Redis(host=c1.host, port=c1.redis_port, password=c1.redis_password)
                     .hget("sw:0000000000000001:l2:stats", "packet_in") or 0) > 20, 10,
         "packet-ins flowing")
    instances.stop_controller(c2)
    instances.start_controller(c2)
    wait_roles(net, [c1, c2], {s: "c1" for s in bridges})
    out = h1.waitOutput()
    stop.set()
    watcher.join()

    assert "DUP!" not in out, "a packet-in was answered twice"
    assert " 0% packet loss" in out, out.splitlines()[-2:]
    assert _switch_keys(c2) == [], "the slave acted on packet-ins (it wrote state)"
    for sample in seen:
        for br, roles in sample.items():
            assert list(roles.values()).count("master") <= 1, f"two masters on {br}: {roles}"
            assert roles.get(c1.target) == "master", f"{br} lost its master: {roles}"
    # Both saw the switch; only c1 ever wrote state for it.
    assert _switch_keys(c1)
    assert ping(h1, h3)["duplicates"] == 0
