"""The instance's Redis: how every app connects to it, and the key names shared across apps.

    sw:<dpid as 16 hex digits>:...   a switch's application state (moves with the switch)
    ctl:...                          this controller instance's own bookkeeping (never moves)
"""
from __future__ import annotations

import inspect
import logging
from typing import Callable

import redis

from ryu_apps.loud import MARKER

#: hash dpid (16 hex digits) -> "ROLE generation_id", as the switch confirmed it to this instance
ROLES_KEY = "ctl:roles"
#: hash dpid -> "MASTER"/"SLAVE": the role a migration gave this instance (outranks master_of)
WANT_KEY = "ctl:want"


def switch_prefix(dpid: int) -> str:
    return f"sw:{dpid:016x}:"


class StoreError(Exception):
    """Redis refused or could not be reached; the message says which and what to do."""


#: recv() size of every client. A snapshot (DUMP) or STATE of 1 MB arrives in 16 reads at redis-py's
#: default 64 KiB, each a trip through the parser's buffer (and under eventlet, the hub): 2.0-2.3
#: ms to DUMP 1 MB against 1.2-1.5 ms with 1 MiB reads; small replies cost the same (about 110 us
#: either way). experiments/client_costs.py, redis-py 8.1.0, 2026-11.
READ_SIZE = 1 << 20
#: redis-py 7.0 (the Ryu environment) has no such option.
HAS_READ_SIZE = "socket_read_size" in inspect.signature(redis.Redis.__init__).parameters


def open_client(host: str, port: int, password: str | None, **kw: object) -> "redis.Redis":
    """A client speaking RESP2. redis-py 8 defaults to RESP3, whose parser formats every pub/sub
    message into a debug string whether or not debug logging is on: 10 ms of CPU per megabyte
    received (a 1 MB STATE took 11.6 ms from PUBLISH to the subscriber, 1.5 ms with RESP2;
    experiments/client_costs.py, redis-py 8.1.0, 2026-11). RESP2 is also what redis-py 7 speaks."""
    if HAS_READ_SIZE:
        kw.setdefault("socket_read_size", READ_SIZE)
    return redis.Redis(host=host, port=port, password=password, protocol=2,
                       **kw)  # type: ignore[arg-type]


def connect(host: str, port: int, password: str | None) -> "redis.Redis":
    client = open_client(host, port, password, socket_timeout=5, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise StoreError(f"Redis at {host}:{port} refused the password "
                         "(check [sdnmig] redis_password_file)") from None
    except redis.ResponseError as e:
        if "NOAUTH" in str(e) or "AUTH" in str(e):
            raise StoreError(f"Redis at {host}:{port} wants a password "
                             "(set [sdnmig] redis_password_file)") from None
        raise StoreError(f"Redis at {host}:{port}: {e}") from None
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise StoreError(f"Redis at {host}:{port} is unreachable ({e}); start it or fix "
                         "[sdnmig] redis_host/redis_port") from None
    return client


def serve(r: "redis.Redis", channel: str, handle: Callable[[bytes], None], what: str,
          log: logging.Logger, sleep: Callable[[float], None]) -> None:
    """Take requests published on `channel` for ever, one at a time, in the caller's (green)
    thread: the operations channels of the LIME shim and the VNM migrator. A lost connection is
    retried every second; a request whose handler raises is logged with the suite's marker (the
    tests fail on it) and the next one is taken."""
    while True:
        ps = r.pubsub(ignore_subscribe_messages=True)
        try:
            ps.subscribe(channel)
            for m in ps.listen():
                try:
                    handle(m["data"])
                except redis.RedisError:
                    raise
                except Exception:  # noqa: BLE001 -- one bad request must not stop the others
                    log.exception("%s in the %s listener", MARKER, what)
        except redis.RedisError as e:
            log.error("%s: channel %s lost (%s); again in 1 s", what, channel, e)
            sleep(1.0)
        finally:
            ps.close()
