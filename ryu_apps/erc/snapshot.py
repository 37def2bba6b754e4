"""A switch's application state as one byte string: every `sw:<dpid>:*` key of a Redis, dumped.

Redis's own DUMP/RESTORE serialisation is used (exact types, no re-encoding), so any app's keys
move, not only the learning app's. Layout, per key: u16 key length, key, i64 PTTL (-1: none),
u32 dump length, dump. The digest is SHA-256 of those bytes; a candidate acknowledges the digest
of what it restored, which the initiator compares with its own.
"""
from __future__ import annotations

import hashlib
import struct
from typing import List, Tuple

import redis

from ryu_apps.kvs import switch_prefix

_HEAD = struct.Struct("!H")
_MID = struct.Struct("!qI")


class SnapshotError(ValueError):
    """A snapshot's bytes do not parse: the sender's fault (or a truncated transfer)."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def switch_keys(client: "redis.Redis", dpid: int) -> List[bytes]:
    return sorted(client.scan_iter(match=switch_prefix(dpid) + "*", count=1000))


def dump(client: "redis.Redis", dpid: int) -> bytes:
    keys = switch_keys(client, dpid)
    if not keys:
        return b""
    pipe = client.pipeline(transaction=True)  # one consistent cut of every key
    for k in keys:
        pipe.pttl(k)
        pipe.dump(k)
    res = pipe.execute()
    out = bytearray()
    for i, k in enumerate(keys):
        ttl, data = res[2 * i], res[2 * i + 1]
        if data is None:  # expired between SCAN and DUMP
            continue
        out += _HEAD.pack(len(k)) + k + _MID.pack(ttl if ttl > 0 else -1, len(data)) + data
    return bytes(out)


def parse(blob: bytes) -> List[Tuple[bytes, int, memoryview]]:
    """The values are views into `blob`, not copies: each goes to the socket as it is (eventlet's
    sendall re-slices what is left after every partial send, which copies a bytes value)."""
    items: List[Tuple[bytes, int, memoryview]] = []
    view, i = memoryview(blob), 0
    try:
        while i < len(blob):
            (klen,) = _HEAD.unpack_from(blob, i)
            i += _HEAD.size
            key = blob[i:i + klen]
            i += klen
            ttl, dlen = _MID.unpack_from(blob, i)
            i += _MID.size
            data = view[i:i + dlen]
            if len(key) != klen or len(data) != dlen:
                raise SnapshotError("truncated snapshot")
            i += dlen
            items.append((key, ttl, data))
    except struct.error:
        raise SnapshotError("truncated snapshot") from None
    return items


def restore(client: "redis.Redis", dpid: int, blob: bytes) -> int:
    """Replace the switch's keys with the snapshot's, atomically; returns the number of keys."""
    items = parse(blob)
    prefix = switch_prefix(dpid).encode()
    for key, _, _ in items:
        if not key.startswith(prefix):
            raise SnapshotError(f"snapshot key {key!r} is not a key of switch {dpid:#x}")
    old = switch_keys(client, dpid)
    pipe = client.pipeline(transaction=True)
    if old:
        pipe.delete(*old)
    for key, ttl, data in items:
        pipe.restore(key, max(ttl, 0), data, replace=True)
    pipe.execute()
    return len(items)


def drop(client: "redis.Redis", dpid: int) -> int:
    keys = switch_keys(client, dpid)
    if keys:
        client.delete(*keys)
    return len(keys)
