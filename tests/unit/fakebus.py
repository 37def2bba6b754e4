"""A private redis-server standing in for the bus, and a fake controller answering on it.

For tests of the operator's side (sdnmig.ops, sdnmig.api): the fake only answers requests with a
canned OP_RESULT, so these tests check the client logic, not the migration. The server runs in
the test's tmp dir on a free port with a password; the fixtures stop what they started.
(sdnmig.lab.poll needs Mininet, which the real-Ryu unit run lacks: `wait_for` stands in.)
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import redis

from ryu_apps.erc import wire
from sdnmig import instances

INSTANCES = {"c1": 0.5, "c2": 0.1, "c3": 0.2, "c4": 0.3}
MASTERS = {1: "c1", 2: "c2", 0xABC: "c1"}  # c2 never listens: "initiator not running"


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> None:
    if not instances._wait(pred, timeout, 0.02):
        raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")


class PrivateRedis:
    """One redis-server of this test's own (config file 0600, password, free port)."""

    def __init__(self, directory: Path) -> None:
        if not shutil.which("redis-server"):
            pytest.skip("redis-server is not installed")
        directory.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = instances.free_ports(1, 30000 + os.getpid() % 20000)[0]
        self.password = secrets.token_hex(12)
        conf = directory / "redis.conf"
        conf.touch(mode=0o600)
        conf.write_text(f"port {self.port}\nbind {self.host}\nrequirepass {self.password}\n"
                        f"dir {directory}\nsave ''\nappendonly no\ndaemonize no\n"
                        f"logfile {directory / 'redis.log'}\n")
        self.proc = subprocess.Popen(["redis-server", str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = self.connect()
        wait_for(self._ready, 10, f"redis-server on port {self.port}")

    def connect(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=self.password,
                           socket_timeout=5)

    def _ready(self) -> bool:
        assert self.proc.poll() is None, "the private redis-server exited at start"
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def as_bus(self) -> SimpleNamespace:
        """What instances.load_bus returns, as far as its users need."""
        return SimpleNamespace(host=self.host, port=self.port, pid=self.proc.pid, dir="",
                               password=self.password, password_file="", client=self.connect)

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def seed(client: redis.Redis) -> None:
    """Four registered instances and three switches with a MASTER each."""
    for ident, load in INSTANCES.items():
        client.hset(wire.INSTANCES_KEY, ident, json.dumps(
            {"id": ident, "host": "127.0.0.1", "of_port": 6653, "channel": wire.channel(ident),
             "load": load, "pid": 1, "ts": time.time()}))
    for dpid, ident in MASTERS.items():
        client.hset(wire.MASTER_KEY, wire.dpid_text(dpid), ident)


def record(msg: wire.Msg, outcome: str = "committed") -> Dict[str, Any]:
    """A plausible migration record answering `msg`."""
    body = msg.body
    cands = list(body.get("to") or ["c2", "c3", "c4"][:body.get("auto") or 1])
    winner = cands[0] if outcome == "committed" else None
    return {"mig": msg.mig, "dpid": msg.dpid, "initiator": "c1", "mode": body.get("mode", "meta"),
            "commit": body.get("commit", "phase2"), "transfer": body.get("transfer", "copy"),
            "candidates": cands, "winner": winner, "outcome": outcome,
            "reason": "" if winner else "every candidate failed", "started": time.time(),
            "total_ms": 42.5, "phases_ms": {"phase1": 10.0, "phase2": 20.0, "phase3": 12.5},
            "drain_ms": 3.25 if winner else None,
            "detail": {c: {"state": "DONE" if c == winner else "LOSER", "phase1_ms": 10.0,
                           "phase2_ms": 20.0 if c == winner else None,
                           "result": "won" if c == winner else "rolled back"} for c in cands},
            "state_bytes": 2048, "gap": 1, "buffered": 3}


def committed(msg: wire.Msg) -> Optional[Dict[str, Any]]:
    outcome = "cancelled" if msg.type == wire.OP_CANCEL else "committed"
    return {"ok": True, "error": None, "record": record(msg, outcome)}


class FakeListener:
    """A thread subscribed to one channel that hands every message to `_serve(data)`; `close()`
    stops it and fails the test if it died."""

    def __init__(self, server: PrivateRedis, channel: str, name: str) -> None:
        self.client = server.connect()
        self.name = name
        self.reply_listeners: List[int] = []  # subscribers of the reply channel at receipt
        self.errors: List[BaseException] = []
        self._stop = threading.Event()
        self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel)
        wait_for(lambda: self.client.pubsub_numsub(channel)[0][1] == 1, 5,
                 f"the {name} to subscribe")
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                got = self._pubsub.get_message(timeout=0.05)
                if got and got["type"] == "message":
                    self._serve(got["data"])
        except BaseException as e:  # reported by close(): a dead fake must fail the test
            self.errors.append(e)

    def _serve(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._pubsub.close()
        self.client.close()
        assert not self._thread.is_alive(), f"the {self.name} did not stop"
        assert not self.errors, f"the {self.name} failed: {self.errors!r}"


class FakeController(FakeListener):
    """Listens on erc:<id>; answers every operator request with `answer(msg)` (None: silence)."""

    def __init__(self, server: PrivateRedis, ident: str = "c1") -> None:
        self.id = ident
        self.answer: Callable[[wire.Msg], Optional[Dict[str, Any]]] = committed
        self.noise: List[bytes] = []       # published on the reply channel before the answer
        self.received: List[wire.Msg] = []
        super().__init__(server, wire.channel(ident), f"fake controller {ident}")

    def _serve(self, data: bytes) -> None:
        msg = wire.decode(data)
        reply = msg.body["reply"]
        self.reply_listeners.append(self.client.pubsub_numsub(reply)[0][1])
        self.received.append(msg)
        for junk in self.noise:
            self.client.publish(reply, junk)
        body = self.answer(msg)
        if body is not None:
            self.client.publish(reply, wire.encode(
                wire.Msg(wire.OP_RESULT, msg.mig, msg.dpid, self.id, body)))



@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    srv = PrivateRedis(tmp_path / "bus")
    seed(srv.client)
    yield srv
    srv.close()


@pytest.fixture
def bus(server: PrivateRedis) -> redis.Redis:
    return server.client


@pytest.fixture
def controller(server: PrivateRedis) -> Iterator[FakeController]:
    fake = FakeController(server, "c1")
    yield fake
    fake.close()
