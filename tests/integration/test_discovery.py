"""Zeroconf discovery between real controller instances: on loopback, and across namespaces.

Each instance's advertiser mirrors what it sees into `ctl:peers` of the instance's own Redis; these
tests read that hash, as the ERC app does. Multicast between the namespaces of MetaTopo's
management network needs no multicast route: zeroconf sends out of the interface it was given.
"""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any, Dict, List, Sequence

import redis

from sdnmig import discovery, instances
from sdnmig.instances import Instance
from sdnmig.lab import poll, unique_prefix
from topologies.testbeds import MetaTopo

DEADLINE_S = 20.0


def _peers(inst: Instance, node: Any = None) -> Dict[str, dict]:
    """ctl:peers of the instance; a namespaced one is read from inside its namespace (another
    test's MetaTopo may own the root namespace's route to 10.254.0.0/24 meanwhile)."""
    if node is None:
        r = redis.Redis(host=inst.host, port=inst.redis_port, password=inst.redis_password,
                        socket_timeout=5)
        return {k.decode(): json.loads(v) for k, v in r.hgetall(discovery.PEERS_KEY).items()}
    out = node.cmd(f"redis-cli --raw --no-auth-warning -a {inst.redis_password} -h {inst.host} "
                   f"-p {inst.redis_port} hgetall {discovery.PEERS_KEY}").splitlines()
    return {k: json.loads(v) for k, v in zip(out[::2], out[1::2])}


def _all_see_each_other(insts: List[Instance], nodes: Sequence[Any] = ()) -> bool:
    ids = {i.id for i in insts}
    return all(set(_peers(inst, nodes[n] if nodes else None)) == ids - {inst.id}
               for n, inst in enumerate(insts))


def test_three_loopback_instances_find_each_other_and_forget_a_stopped_one(controllers):
    insts = controllers.start(3, master="none")
    poll(lambda: _all_see_each_other(insts), DEADLINE_S, "every instance to see the other two")
    bus = controllers.bus
    for inst in insts:
        for peer_id, rec in _peers(inst).items():
            peer = next(i for i in insts if i.id == peer_id)
            assert rec["host"] == "127.0.0.1" and rec["of_port"] == peer.of_port, rec
            assert rec["endpoint"] == f"redis://{bus.host}:{bus.port}/erc:{peer_id}", rec
            assert 0 <= rec["load"] and rec["ts"] > 0, rec
    own = redis.Redis(host=insts[0].host, port=insts[0].redis_port,
                      password=insts[0].redis_password)
    poll(lambda: own.get(discovery.LOAD_KEY) is not None, DEADLINE_S, "ctl:load of c1")

    instances.stop_instance(insts[2])
    poll(lambda: _all_see_each_other(insts[:2]), DEADLINE_S, "c3 to leave the others' ctl:peers")


def test_a_stopped_controller_is_withdrawn_and_its_restart_advertised(controllers):
    c1, c2 = controllers.start(2, master="none")
    poll(lambda: _all_see_each_other([c1, c2]), DEADLINE_S, "c1 and c2 to see each other")
    instances.stop_controller(c2)  # its Redis and advertiser stay up
    poll(lambda: not _peers(c1), DEADLINE_S, "c2's advert to be withdrawn")
    instances.start_controller(c2)
    poll(lambda: "c2" in _peers(c1), DEADLINE_S, "the restarted c2 to be advertised again")


def test_a_busy_controller_advertises_its_load(controllers):
    """A stand-in for c1's controller (a busy loop whose command line names c1's config, as the
    real one does) is picked up from instance.json like a restarted controller."""
    c1, c2 = controllers.start(2, master="none")
    poll(lambda: "c1" in _peers(c2), DEADLINE_S, "c2 to see c1")
    real_pid = c1.controller_pid
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass",
                             str(c1.path / "controller.conf")])
    try:
        c1.controller_pid = busy.pid
        instances.write_instance_file(c1)
        poll(lambda: _peers(c2).get("c1", {}).get("load", 0) >= 0.3, DEADLINE_S,
             "c1's load to reach c2")
    finally:
        busy.kill()
        busy.wait()
        c1.controller_pid = real_pid
        instances.write_instance_file(c1)


def test_the_command_line_browser_lists_the_instances(controllers):
    insts = controllers.start(2, master="none")
    scope = f"redis://{controllers.bus.host}:{controllers.bus.port}"

    def found():
        return sorted(d["id"] for d in discovery.browse(2.0) if d["scope"] == scope)

    poll(lambda: found() == ["c1", "c2"], DEADLINE_S, "browse() to list c1 and c2")
    # one listening window can miss an answer on a busy machine (a CI run at 332f1d9 listed
    # only c2): the user would run it again, so does the test
    poll(lambda: _lists(_discover([]), insts, "127.0.0.1"), DEADLINE_S,
         "sdnmig.discovery discover to list c1 and c2")


def _discover(where: List[str], run: Any = None) -> str:
    """The command-line browser's output (in a host's namespace: `run` is its cmd)."""
    argv = [sys.executable, "-m", "sdnmig.discovery", "discover", "--timeout", "2", *where]
    if run is not None:
        return run(" ".join(argv))
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


def _lists(out: str, insts: Sequence[Instance], host: str = "") -> bool:
    return all(f"tcp:{host or inst.host}:{inst.of_port}" in out for inst in insts)


def test_instances_in_separate_namespaces_find_each_other(controllers, namespaced):
    topo = MetaTopo(switches=2, controllers=3, namespaces=True, prefix=unique_prefix())
    net, started = namespaced(topo, 3, master="none", bus_host="10.254.0.254")
    nodes = [net.get(name) for name, _ in topo.controller_nodes()]
    poll(lambda: _all_see_each_other(started, nodes), DEADLINE_S,
         "each namespaced instance to see the other two")
    rec = _peers(started[0], nodes[0])["c2"]
    assert rec["host"] == "10.254.0.2", rec
    assert rec["endpoint"] == f"redis://10.254.0.254:{controllers.bus.port}/erc:c2", rec
    # the command-line browser, run in c3's namespace on its management address
    poll(lambda: _lists(_discover(["--interface", "10.254.0.3"], nodes[2].cmd), started),
         DEADLINE_S, "sdnmig.discovery discover in c3's namespace to list all three")
    instances.stop_instance(started[1])
    poll(lambda: _all_see_each_other([started[0], started[2]], [nodes[0], nodes[2]]), DEADLINE_S,
         "c2 to leave the others' ctl:peers")
