"""The operator's side of the shim's operations channel: one request, its one answer.

The shim listens on `lime:ops` of its controller instance's own Redis and publishes one JSON
answer ({"ok": true, ...} or {"ok": false, "error": ...}) on the channel the request names. The
reply channel is private to the request and subscribed *before* the request is published, so a
fast answer is never missed; a publish that reaches nobody means no shim runs there (said at once,
instead of waiting out the timeout). A refusal by the shim is an answer, returned as it came.
"""
from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any, Dict, Optional

import redis

from sdnmig.errors import SdnmigError

OPS_CHANNEL = "lime:ops"  # lime_shim.app.OPS_CHANNEL (not imported: that module needs the platform)
REPLY_PREFIX = "lime:reply:"


class Unavailable(SdnmigError):
    """No shim to ask: its Redis is unreachable, or nobody listens on the operations channel."""


class NoAnswer(SdnmigError):
    """The shim took the request but did not answer in time; the operation may still be running."""


def request(r: redis.Redis, req: Dict[str, Any], timeout: float, channel: str = OPS_CHANNEL,
            who: str = "the LIME shim (app 'lime')") -> Dict[str, Any]:
    """Send `req` (an operation, without "reply") and return the answer. Other apps (the VNM
    migrator) answer on a `channel` of their own the same way."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
            or not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout {timeout!r} must be a number of seconds above 0")
    reply = REPLY_PREFIX + secrets.token_hex(8)
    deadline = time.monotonic() + timeout
    try:
        pubsub = r.pubsub()
        try:
            pubsub.subscribe(reply)
            if _next(pubsub, deadline, "subscribe") is None:
                raise NoAnswer(f"could not subscribe to {reply} within {timeout:.1f} s")
            if not r.publish(channel, json.dumps(dict(req, reply=reply))):
                raise Unavailable(f"nobody listens on {channel}: is {who} running on this "
                                  "controller instance?")
            got = _next(pubsub, deadline, "message")
        finally:
            pubsub.close()
    except redis.RedisError as e:
        raise Unavailable(f"the shim's Redis: {e}") from None
    if got is None:
        raise NoAnswer(f"no answer to {req.get('op', '?')} within {timeout:.1f} s: the operation "
                       "may still be running ('sdnmig lime status' tells)")
    return _answer(got["data"])


def _next(pubsub: Any, deadline: float, kind: str) -> Optional[Dict[str, Any]]:
    """The next pub/sub item of this kind, or None at the deadline."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        got = pubsub.get_message(timeout=left)
        if got is not None and got.get("type") == kind:
            return got


def _answer(raw: Any) -> Dict[str, Any]:
    try:
        answer = json.loads(raw)
    except (TypeError, ValueError):
        answer = None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise SdnmigError(f"the shim answered something else than {{'ok': ...}}: {raw[:200]!r}")
    return answer
