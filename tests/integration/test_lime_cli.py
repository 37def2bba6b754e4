"""`sdnmig lime` on LimeTopo: the planner reads the real bridges' wiring and finds the request
test_lime.py writes by hand; `sdnmig lime status` (a subprocess on the test's state dir) shows the
shim's logical switches. Clone itself is tested in test_lime.py, not through the CLI here."""
from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from lime_shim import plan
from sdnmig import instances, lime_topo
from sdnmig.lab import poll
from tests.integration.test_lime import port_of, start_lime
from topologies.testbeds import spare_dpid


def _sdnmig(state_dir: Any, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdnmig.cli", "--state-dir", str(state_dir),
                           *args], capture_output=True, text=True, timeout=120)


def test_the_plan_from_the_real_wiring_and_status_from_the_command_line(controllers, mininet):
    topo, c1, net = start_lime(controllers, mininet)
    instances.Registry(controllers.state_dir).save({c1.id: c1})  # what `controllers start` does
    name = {n.replace(topo.prefix, ""): n for n in topo.switches()}
    s1, s2, s3, s3p = (name[n] for n in ("s1", "s2", "s3", "s3p"))
    expected = {
        "switch": 3, "onto": spare_dpid(3),
        "ports": {port_of(net, s3, s1): port_of(net, s3p, s1),
                  port_of(net, s3, s2): port_of(net, s3p, s2)},
        "tunnels": {},
        "neighbours": [[1, port_of(net, s1, s3), port_of(net, s1, s3p)],
                       [2, port_of(net, s2, s3), port_of(net, s2, s3p)]]}

    wiring = lime_topo.topology(c1.target)
    assert sorted(wiring) == [1, 2, 3, spare_dpid(3)], "only the bridges of this controller"
    assert plan.clone_request(wiring, 3, spare_dpid(3)) == expected
    h1_port = port_of(net, s1, f"{topo.prefix}h1")
    assert wiring[1][h1_port].host and wiring[1][h1_port].host.startswith("netns:")
    assert plan.logical_ports(wiring, 1, [spare_dpid(3)]) == sorted(
        [h1_port, port_of(net, s1, s3)])

    res = _sdnmig(controllers.state_dir, "lime", "clone", "3", "--onto", hex(spare_dpid(3)),
                  "--plan")
    assert res.returncode == 0, res.stderr
    assert plan.check("clone", {k: v for k, v in json.loads(res.stdout).items() if k != "op"}) \
        == {"op": "clone", **expected}

    def status() -> Any:
        out = _sdnmig(controllers.state_dir, "lime", "status")
        assert out.returncode == 0, out.stderr
        rows = {ln.split()[0]: ln.split()[1:] for ln in out.stdout.splitlines() if ln.strip()}
        return out.stdout if all(rows.get(f"{d:#x}") == [f"{d:#x}"] for d in (1, 2, 3)) else None
    out = poll(status, 15, "the three logical switches in `sdnmig lime status`")
    assert "no neighbour rewired by a clone" in out, out
    assert f"{spare_dpid(3):#x} " not in out, "the spare is not a logical switch"

    bad = _sdnmig(controllers.state_dir, "lime", "retire", "3", "--instance", "3")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert "the shim refused retire" in bad.stderr and "last instance" in bad.stderr, bad.stderr
