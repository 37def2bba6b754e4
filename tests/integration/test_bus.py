"""The deployment bus: one password-protected Redis per state dir, named in every instance's config."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis

from sdnmig import instances
from sdnmig.lab import poll


def _conf(inst: instances.Instance) -> dict:
    lines = (inst.path / "controller.conf").read_text().splitlines()
    return dict(ln.split(" = ", 1) for ln in lines if " = " in ln)


def _assert_guarded(bus: instances.Bus) -> None:
    assert bus.client().ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=bus.host, port=bus.port, password="wrong", socket_timeout=5).ping()
    with pytest.raises(redis.AuthenticationError):  # redis-py says so for NOAUTH too
        redis.Redis(host=bus.host, port=bus.port, socket_timeout=5).ping()


def test_instances_of_one_lab_share_a_bus_their_configs_name(controllers):
    c1, c2 = controllers.start(2, discovery=False)
    (c3,) = controllers.start(1, ids=["c3"], discovery=False)
    bus = controllers.bus
    for inst in (c1, c2, c3):
        conf = _conf(inst)
        assert (conf["bus_host"], int(conf["bus_port"])) == (bus.host, bus.port), conf
        with open(conf["bus_password_file"]) as f:
            assert f.read().strip() == bus.password
    assert instances.load_bus(controllers.state_dir) == bus
    _assert_guarded(bus)
    controllers.close()
    assert instances.load_bus(controllers.state_dir) is None
    assert not instances.alive(bus.pid, str(bus.conf))


def test_the_command_line_starts_the_bus_and_stops_it_with_the_last_instance(tmp_path):
    state = tmp_path / "state"
    base = 25000 + os.getpid() % 9000

    def sdnmig(*args: str) -> str:
        res = subprocess.run([sys.executable, "-m", "sdnmig.cli", "--state-dir", str(state), *args],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr
        return res.stdout

    sdnmig("controllers", "start", "--count", "2", "--of-port", str(base),
           "--redis-port", str(base + 1000))
    try:
        bus = instances.load_bus(state)
        assert bus is not None
        assert json.loads((state / "bus.json").read_text())["pid"] == bus.pid
        for inst in instances.Registry(state).load().values():
            assert int(_conf(inst)["bus_port"]) == bus.port
            assert instances.alive(inst.advertiser_pid, str(inst.instance_file))
        _assert_guarded(bus)
        sdnmig("controllers", "stop", "c1")
        assert instances.load_bus(state) == bus, "c2 still uses it"
    finally:
        sdnmig("controllers", "stop")
    poll(lambda: instances.load_bus(state) is None, 10, "the bus to stop with the last instance")
    assert not (state / "bus.json").exists()
