"""Give a switch's application state a chosen size, as migrations will move it.

A switch's state is every key `sw:<dpid 16 hex>:*` in the master's Redis; a migration moves all of
them. Its size is measured as the sum of the keys' DUMP lengths (Redis's own serialisation, what a
snapshot of the keys carries). To reach a target size we keep the real entries (the sender's MAC,
the counters), add `synthetic` MAC entries to `sw:<dpid>:l2:macs` (locally administered unicast
addresses 02:5a:xx:xx:xx:xx no frame ever uses, on port 1) and one string `sw:<dpid>:pad` of random
bytes (random so that DUMP's LZF compression cannot shrink it) whose length is computed from the
size the other keys already have.

DUMP of a string value of n raw bytes is n plus: one type byte, the RDB length prefix (1, 2, 5 or 9
bytes for n < 64, < 16384, < 2**32, larger), two bytes of RDB version and an 8-byte CRC64.
"""
from __future__ import annotations

import random
from typing import Any, Dict

PAD_SUFFIX = "pad"
MACS_SUFFIX = "l2:macs"
SYNTHETIC_PREFIX = b"\x02\x5a"
SYNTHETIC_PORT = 1


def _len_prefix(n: int) -> int:
    if n < 64:
        return 1
    if n < 16384:
        return 2
    if n < 1 << 32:
        return 5
    return 9


def string_dump_len(n: int) -> int:
    """DUMP length of an incompressible n-byte string value."""
    return n + 1 + _len_prefix(n) + 2 + 8


def pad_length(target: int, others: int) -> int:
    """Length of the pad string so that others + DUMP(pad) is as close to `target` as DUMP's
    length steps allow without exceeding it (0: no pad, the other keys take the budget)."""
    budget = target - others
    best = 0
    for lo, hi, prefix in ((0, 63, 1), (64, 16383, 2), (16384, (1 << 32) - 1, 5),
                           (1 << 32, 1 << 62, 9)):
        n = min(hi, budget - (1 + prefix + 2 + 8))
        if n >= lo:
            best = n
    return best


def synthetic_mac(i: int) -> str:
    return (SYNTHETIC_PREFIX + i.to_bytes(4, "big")).hex(":")


def prefix_of(dpid: int) -> str:
    return f"sw:{dpid:016x}:"


def state_sizes(client: Any, dpid: int) -> Dict[str, int]:
    """DUMP length of every key of the switch's state, by key name."""
    out = {}
    for key in client.scan_iter(match=prefix_of(dpid) + "*", count=1000):
        dumped = client.dump(key)
        if dumped is not None:
            out[key.decode() if isinstance(key, bytes) else key] = len(dumped)
    return out


def state_size(client: Any, dpid: int) -> int:
    return sum(state_sizes(client, dpid).values())


def pad_state(client: Any, dpid: int, target: int, synthetic: int, seed: int = 0) -> Dict[str, int]:
    """Make the switch's state `target` bytes (DUMP lengths) on this Redis; returns the sizes.

    Idempotent: synthetic entries are (re)written, the pad is recomputed from the other keys.
    """
    prefix = prefix_of(dpid)
    pad_key = prefix + PAD_SUFFIX
    client.delete(pad_key)
    if synthetic:
        pipe = client.pipeline(transaction=False)
        mapping = {synthetic_mac(i): SYNTHETIC_PORT for i in range(synthetic)}
        pipe.hset(prefix + MACS_SUFFIX, mapping=mapping)
        pipe.execute()
    others = state_size(client, dpid)
    n = pad_length(target, others)
    if n:
        client.set(pad_key, random.Random(seed).randbytes(n))
    total = state_size(client, dpid)
    return {"target": target, "others": others, "pad": n, "total": total,
            "synthetic": synthetic}
