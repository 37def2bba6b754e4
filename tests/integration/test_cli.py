"""The `sdnmig` command on a real network: start, status (who masters what), stop exactly that."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from sdnmig import instances
from sdnmig.lab import poll, unique_prefix, wait_ovs_roles, wait_roles
from topologies.testbeds import LinearTopo


def _sdnmig(state_dir, *args):
    res = subprocess.run([sys.executable, "-m", "sdnmig.cli", "--state-dir", str(state_dir), *args],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_start_status_stop(tmp_path, mininet):
    state = tmp_path / "state"
    base = 24000 + os.getpid() % 9000
    _sdnmig(state, "controllers", "start", "--count", "2", "--apps", "learning",
            "--of-port", str(base), "--redis-port", str(base + 1000), "--master", "c2=*")
    try:
        known = instances.Registry(state).load()
        c1, c2 = known["c1"], known["c2"]
        topo = LinearTopo(k=2, prefix=unique_prefix())
        net = mininet(topo, [c1, c2])
        wait_roles(net, [c1, c2], {s: "c2" for s in topo.switches()})
        wait_ovs_roles([c1, c2], {s: "c2" for s in topo.switches()})
        out = _sdnmig(state, "status")
        for sw in topo.switches():
            line = next(ln for ln in out.splitlines() if ln.startswith(sw + " "))
            assert line.split()[2] == "c2" and "c1:slave" in line, out
        assert net.pingAll(timeout=1) == 0.0
    finally:
        _sdnmig(state, "controllers", "stop")
    for inst in (c1, c2):
        poll(lambda: instances.instance_state(inst) == "stopped", 10, f"{inst.id} stopped")
    assert json.loads((state / "instances.json").read_text()) == {}
