"""The instance's Redis: how every app connects to it, and the key names shared across apps.

    sw:<dpid as 16 hex digits>:...   a switch's application state (moves with the switch)
    ctl:...                          this controller instance's own bookkeeping (never moves)
"""
from __future__ import annotations

import redis

#: hash dpid (16 hex digits) -> "ROLE generation_id", as the switch confirmed it to this instance
ROLES_KEY = "ctl:roles"
#: hash dpid -> "MASTER"/"SLAVE": the role a migration gave this instance (outranks master_of)
WANT_KEY = "ctl:want"


def switch_prefix(dpid: int) -> str:
    return f"sw:{dpid:016x}:"


class StoreError(Exception):
    """Redis refused or could not be reached; the message says which and what to do."""


def connect(host: str, port: int, password: str | None) -> "redis.Redis":
    client = redis.Redis(host=host, port=port, password=password, socket_timeout=5,
                         socket_connect_timeout=3)
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
