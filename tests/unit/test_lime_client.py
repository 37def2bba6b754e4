"""lime_shim.client against a private redis-server and a fake shim answering on `lime:ops`.

The fake only answers (canned, or silence, or junk): these tests check the request/answer
exchange, not the operations.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest
import redis

from fakebus import FakeListener, PrivateRedis
from lime_shim import client
from sdnmig.errors import SdnmigError

STATUS = {"switches": {"0x3": ["0x103", "0x3"]}, "links": {}}


def canned(req: Dict[str, Any]) -> Optional[Any]:
    """The fake's default: status as in test_lime, refusal of 'fly', a record of anything else."""
    if req["op"] == "status":
        return {"ok": True, **STATUS}
    if req["op"] == "fly":
        return {"ok": False, "error": "unknown operation 'fly'"}
    return {"ok": True, "switch": req.get("switch"), "instances": [3, 259], "ms": 1.5}


class FakeShim(FakeListener):
    """Listens on lime:ops; answers each request with `answer(req)` (None: silence; bytes: sent
    as they are)."""

    def __init__(self, server: PrivateRedis) -> None:
        self.answer: Callable[[Dict[str, Any]], Optional[Any]] = canned
        self.received: List[Dict[str, Any]] = []
        super().__init__(server, client.OPS_CHANNEL, "fake shim")

    def _serve(self, data: bytes) -> None:
        req = json.loads(data)
        self.reply_listeners.append(self.client.pubsub_numsub(req["reply"])[0][1])
        self.received.append(req)
        body = self.answer(req)
        if body is not None:
            self.client.publish(req["reply"], body if isinstance(body, bytes) else json.dumps(body))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[PrivateRedis]:
    srv = PrivateRedis(tmp_path / "shim-redis")
    yield srv
    srv.close()


@pytest.fixture
def shim(redis_server: PrivateRedis) -> Iterator[FakeShim]:
    fake = FakeShim(redis_server)
    yield fake
    fake.close()


def test_the_channel_is_the_shims() -> None:
    app = pytest.importorskip("lime_shim.app")
    assert client.OPS_CHANNEL == app.OPS_CHANNEL


def test_an_answer_comes_back_on_a_reply_channel_subscribed_before_the_request(
        redis_server: PrivateRedis, shim: FakeShim) -> None:
    got = client.request(redis_server.client, {"op": "status"}, 5)
    assert got == {"ok": True, **STATUS}
    (req,) = shim.received
    assert req["op"] == "status" and req["reply"].startswith(client.REPLY_PREFIX)
    assert shim.reply_listeners == [1]
    again = client.request(redis_server.client, {"op": "clone", "switch": 3}, 5)
    assert again["instances"] == [3, 259]
    assert shim.received[1]["reply"] != req["reply"], "each request has its own reply channel"


def test_a_refusal_is_returned_as_the_shim_gave_it(redis_server: PrivateRedis,
                                                    shim: FakeShim) -> None:
    got = client.request(redis_server.client, {"op": "fly"}, 5)
    assert got == {"ok": False, "error": "unknown operation 'fly'"}


def test_nobody_listening_is_said_at_once(redis_server: PrivateRedis) -> None:
    started = time.monotonic()
    with pytest.raises(client.Unavailable, match="nobody listens on lime:ops"):
        client.request(redis_server.client, {"op": "status"}, 10)
    assert time.monotonic() - started < 2


def test_silence_is_no_answer_at_the_deadline(redis_server: PrivateRedis, shim: FakeShim) -> None:
    shim.answer = lambda req: None
    started = time.monotonic()
    with pytest.raises(client.NoAnswer, match="no answer to clone within 0.3 s"):
        client.request(redis_server.client, {"op": "clone"}, 0.3)
    assert 0.3 <= time.monotonic() - started < 3


@pytest.mark.parametrize("junk", [b"not json", b"[1]", b'{"error": "no ok"}'])
def test_a_malformed_answer_is_an_error(redis_server: PrivateRedis, shim: FakeShim,
                                        junk: bytes) -> None:
    shim.answer = lambda req: junk
    with pytest.raises(SdnmigError, match="answered something else"):
        client.request(redis_server.client, {"op": "status"}, 5)


def test_a_redis_that_is_down_is_unavailable(redis_server: PrivateRedis) -> None:
    r = redis_server.connect()
    redis_server.close()
    with pytest.raises(client.Unavailable, match="the shim's Redis"):
        client.request(r, {"op": "status"}, 2)


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), True, "5"])
def test_a_bad_timeout_is_refused(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        client.request(redis.Redis(port=1), {"op": "status"}, timeout)
