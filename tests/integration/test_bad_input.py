"""Bad input gets one clear line and leaves nothing half-started."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sdnmig import instances
from sdnmig.errors import SdnmigError


def _sdnmig(*args: str, env: dict | None = None, state_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdnmig.cli", "--state-dir", str(state_dir), *args],
                          capture_output=True, text=True, env=dict(os.environ, **(env or {})),
                          timeout=120)


def _one_line_error(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sdnmig: "), res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def _nothing_left(inst) -> None:
    assert not instances.alive(inst.controller_pid, str(inst.path / "controller.conf"))
    assert not instances.alive(inst.redis_pid, str(inst.path / "redis.conf"))


def test_unknown_app(tmp_path):
    _one_line_error(_sdnmig("controllers", "start", "--apps", "learning,nosuchapp",
                            state_dir=tmp_path), "unknown app 'nosuchapp'")
    assert not (tmp_path / "instances.json").exists()


def test_openflow_port_in_use(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        _one_line_error(_sdnmig("controllers", "start", "--of-port", str(port),
                                "--of-port-strict", state_dir=tmp_path), f"{port} is in use")


def test_ovs_not_running(tmp_path):
    # ovs-vsctl finds its database socket through OVS_RUNDIR: point it at an empty dir.
    _one_line_error(_sdnmig("status", env={"OVS_RUNDIR": str(tmp_path)}, state_dir=tmp_path),
                    "Open vSwitch is not running")


def test_stop_unknown_instance(tmp_path):
    _one_line_error(_sdnmig("controllers", "stop", "c7", state_dir=tmp_path), "no instance c7")


def test_bad_master_split(tmp_path):
    _one_line_error(_sdnmig("controllers", "start", "--count", "2", "--master", "c1=1;c2=1",
                            state_dir=tmp_path), "exactly one master")


def test_redis_refusing_password_stops_everything(tmp_path):
    (inst,) = instances.plan(1, ["learning"], tmp_path, of_port=21000 + os.getpid() % 9000,
                             redis_port=31000 + os.getpid() % 9000)
    inst.path.mkdir(parents=True)
    instances.start_redis(inst)
    (inst.path / "redis.password").write_text("not-the-password")
    with pytest.raises(SdnmigError, match="refused the password"):
        instances.start_controller(inst)
    instances.stop_instance(inst)
    _nothing_left(inst)


def test_redis_unreachable_fails_the_whole_start(tmp_path):
    """The second instance's controller cannot reach its Redis: the first is stopped again."""
    insts = instances.plan(2, ["learning"], tmp_path, of_port=22000 + os.getpid() % 9000,
                           redis_port=32000 + os.getpid() % 9000)
    insts[1].extra_conf["redis_port"] = "1"  # the [sdnmig] option wins over the instance's own
    reg = instances.Registry(tmp_path)
    with pytest.raises(SdnmigError, match="unreachable"):
        instances.start_all(insts, reg)
    for inst in insts:
        _nothing_left(inst)
    assert reg.load() == {}


def test_bad_config_value_is_one_line(tmp_path):
    (inst,) = instances.plan(1, ["learning"], tmp_path, of_port=23000 + os.getpid() % 9000,
                             redis_port=33000 + os.getpid() % 9000, master="none")
    inst.master_of = "1,banana"
    with pytest.raises(SdnmigError, match="master_of: 'banana' is not a datapath id"):
        instances.start_instance(inst)
    _nothing_left(inst)
