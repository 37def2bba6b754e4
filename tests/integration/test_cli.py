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


def test_migrate_status_history_from_the_command_line_and_http(tmp_path, mininet):
    """The operator's path end to end: CLI-started instances, `sdnmig migrate`, the HTTP API."""
    import urllib.request

    state = tmp_path / "state"
    base = 25000 + os.getpid() % 9000
    _sdnmig(state, "controllers", "start", "--count", "3", "--apps", "learning,erc",
            "--of-port", str(base), "--redis-port", str(base + 1000))
    api = None
    try:
        known = instances.Registry(state).load()
        insts = [known[c] for c in ("c1", "c2", "c3")]
        topo = LinearTopo(k=2, prefix=unique_prefix())
        net = mininet(topo, insts)
        wait_roles(net, insts, {s: "c1" for s in topo.switches()})
        bus = instances.load_bus(state).client()
        poll(lambda: bus.hget("ctl:master", "%016x" % 1) == b"c1", 10, "c1 on the bus")
        poll(lambda: bus.hlen("ctl:instances") == 3, 10, "instances on the bus")
        import redis
        c1r = redis.Redis(port=insts[0].redis_port, password=insts[0].redis_password)
        poll(lambda: c1r.hlen("ctl:peers") == 2, 20, "zeroconf: c1 to discover c2 and c3")
        out = _sdnmig(state, "migrate", "--switch", "1", "--to", "c2,c3", "--commit", "phase2")
        assert "committed" in out and "phase1" in out, out
        winner = "c2" if "winner c2" in out else "c3"
        assert winner in out
        hist = json.loads(_sdnmig(state, "history", "--json"))
        assert hist[0]["outcome"] == "committed" and hist[0]["winner"] == winner
        assert net.pingAll(timeout=1) == 0.0

        port = base + 2000
        api = subprocess.Popen([sys.executable, "-m", "sdnmig.cli", "--state-dir", str(state),
                                "api", "--port", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        token_file = state / "api.token"
        poll(lambda: token_file.exists() and token_file.read_text().strip(), 10, "api token")

        def call(method, path, body=None):
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=json.dumps(body).encode() if body else None,
                                         headers={"Authorization": "Bearer "
                                                  + token_file.read_text().strip(),
                                                  "Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())

        poll(lambda: _up(port), 10, "the API to listen")
        rec = call("POST", "/migrate", {"switch": 1, "fixed": "c1"})
        assert rec["outcome"] == "committed" and rec["winner"] == "c1", rec
        st = call("GET", "/status")
        assert st["masters"]["0x1"] == "c1", st
        assert len(call("GET", "/history?limit=5")) == 2
    finally:
        if api:
            api.terminate()
            api.wait(10)
        _sdnmig(state, "controllers", "stop")


def _up(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
