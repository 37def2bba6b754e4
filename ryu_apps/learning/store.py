"""The learning app's state in Redis, one key family per switch so a switch's state moves alone.

    sw:<dpid as 16 hex digits>:l2:macs   hash  mac "aa:bb:.." -> port
    sw:<dpid>:l2:stats                   hash  packet_in, flooded, installed, host:<mac> -> count

Writes are combined: a batch of packet-ins becomes one pipeline (counters summed per field), so
Redis costs one round trip per batch, not per packet-in.
"""
from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, Tuple

import redis

from ryu_apps.kvs import StoreError, connect, switch_prefix  # noqa: F401 -- part of this API
from ryu_apps.learning.core import Count, Learn, Mac, mac_of, mac_text


def macs_key(dpid: int) -> str:
    return switch_prefix(dpid) + "l2:macs"


def stats_key(dpid: int) -> str:
    return switch_prefix(dpid) + "l2:stats"


#: The table as one string "mac port mac port ...": redis-py's pure-Python parser spends about
#: 0.7 us per reply element, so HGETALL of 1000 hosts (2000 elements) took 1.4-1.8 ms against
#: 0.5-0.7 ms this way (experiments/client_costs.py, redis-py 8.1.0, Redis 7.0). Loading is on
#: the critical path of taking a switch over.
_FLAT_TABLE = "return table.concat(redis.call('HGETALL', KEYS[1]), ' ')"


class L2Store:
    def __init__(self, client: "redis.Redis") -> None:
        self.client = client
        self._flat_table = client.register_script(_FLAT_TABLE)

    def load(self, dpid: int) -> Dict[Mac, int]:
        items = self._flat_table(keys=[macs_key(dpid)]).split()
        return {mac_of(k.decode()): int(v) for k, v in zip(items[::2], items[1::2])}

    def stats(self, dpid: int) -> Dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(stats_key(dpid)).items()}

    def commit(self, writes: Iterable[object]) -> None:
        """Apply writes in one round trip; raises on failure so nothing is acted on."""
        learned: Dict[Tuple[int, Mac], int | None] = {}
        counts: Counter = Counter()
        for w in writes:
            if isinstance(w, Learn):
                learned[(w.dpid, w.mac)] = w.port
            elif isinstance(w, Count):
                counts[(w.dpid, w.field)] += w.n
            else:
                raise TypeError(f"not a store write: {w!r}")
        if not learned and not counts:
            return
        pipe = self.client.pipeline(transaction=False)
        for (dpid, mac), port in learned.items():
            if port is None:
                pipe.hdel(macs_key(dpid), mac_text(mac))
            else:
                pipe.hset(macs_key(dpid), mac_text(mac), port)
        for (dpid, fld), n in counts.items():
            pipe.hincrby(stats_key(dpid), fld, n)
        pipe.execute()
