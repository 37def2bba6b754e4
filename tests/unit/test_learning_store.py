"""`L2Store`: write combining into one Redis pipeline, and loading back, against a tiny fake.

The fake implements only the redis-py calls the store makes (hgetall, pipeline with hset / hdel /
hincrby / execute) with redis-py's default byte semantics, and records every pipeline it runs.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Tuple

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from ryu_apps.learning import store as store_mod
from ryu_apps.learning.core import Count, Learn, LearningCore, mac_text
from ryu_apps.learning.store import L2Store, StoreError, macs_key, stats_key, switch_prefix
from tests.unit.fakebus import PrivateRedis

H1 = bytes.fromhex("0000000000a1")
H2 = bytes.fromhex("0000000000a2")


def _b(value: Any) -> bytes:
    """redis-py's encoding of a command argument (no decode_responses)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (int, float)):
        return repr(value).encode()
    return str(value).encode()


class FakePipeline:
    def __init__(self, server: "FakeRedis") -> None:
        self.server = server
        self.commands: List[Tuple[Any, ...]] = []

    def hset(self, key: str, field: str, value: Any) -> "FakePipeline":
        self.commands.append(("hset", key, field, value))
        return self

    def hdel(self, key: str, *fields: str) -> "FakePipeline":
        self.commands.append(("hdel", key) + fields)
        return self

    def hincrby(self, key: str, field: str, amount: int = 1) -> "FakePipeline":
        self.commands.append(("hincrby", key, field, amount))
        return self

    def execute(self) -> List[Any]:
        self.server.executed.append(list(self.commands))
        out = []
        for cmd in self.commands:
            h = self.server.data.setdefault(_b(cmd[1]), {})
            if cmd[0] == "hset":
                out.append(int(_b(cmd[2]) not in h))
                h[_b(cmd[2])] = _b(cmd[3])
            elif cmd[0] == "hdel":
                out.append(sum(h.pop(_b(f), None) is not None for f in cmd[2:]))
            else:
                assert isinstance(cmd[3], int)
                h[_b(cmd[2])] = _b(int(h.get(_b(cmd[2]), b"0")) + cmd[3])
                out.append(int(h[_b(cmd[2])]))
        self.commands = []
        return out


class FakeRedis:
    def __init__(self) -> None:
        self.data: Dict[bytes, Dict[bytes, bytes]] = {}
        self.executed: List[List[Tuple[Any, ...]]] = []
        self.pipelines = 0

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        assert transaction is False, "write batches need no MULTI/EXEC"
        self.pipelines += 1
        return FakePipeline(self)

    def hgetall(self, key: str) -> Dict[bytes, bytes]:
        return dict(self.data.get(_b(key), {}))

    def register_script(self, source: str) -> Any:
        """Only the store's flattening HGETALL (the real script runs in the test below)."""
        assert source == store_mod._FLAT_TABLE
        return lambda keys: b" ".join(x for kv in self.hgetall(keys[0]).items() for x in kv)


@pytest.fixture
def fake() -> FakeRedis:
    return FakeRedis()


# -- keys -----------------------------------------------------------------------------------------

def test_keys_use_sixteen_hex_digit_dpids() -> None:
    assert switch_prefix(1) == "sw:0000000000000001:"
    assert macs_key(0xABC) == "sw:0000000000000abc:l2:macs"
    assert stats_key(2**64 - 1) == "sw:ffffffffffffffff:l2:stats"


# -- commit ---------------------------------------------------------------------------------------

def test_empty_batch_sends_nothing(fake: FakeRedis) -> None:
    L2Store(fake).commit([])
    L2Store(fake).commit(iter(()))
    assert fake.pipelines == 0 and fake.executed == []


def test_counters_are_summed_per_switch_and_field_in_one_round_trip(fake: FakeRedis) -> None:
    L2Store(fake).commit([Count(1, "packet_in"), Count(1, "packet_in"), Count(1, "flooded"),
                          Count(2, "packet_in"), Count(1, "packet_in", 5)])
    assert len(fake.executed) == 1
    assert sorted(fake.executed[0]) == sorted([
        ("hincrby", stats_key(1), "packet_in", 7),
        ("hincrby", stats_key(1), "flooded", 1),
        ("hincrby", stats_key(2), "packet_in", 1)])


def test_last_learn_per_mac_wins(fake: FakeRedis) -> None:
    L2Store(fake).commit([Learn(1, H1, 1), Learn(1, H1, 2), Learn(1, H2, 3), Learn(2, H1, 9),
                          Learn(1, H1, 4)])
    assert len(fake.executed) == 1
    assert sorted(fake.executed[0]) == sorted([
        ("hset", macs_key(1), mac_text(H1), 4),
        ("hset", macs_key(1), mac_text(H2), 3),
        ("hset", macs_key(2), mac_text(H1), 9)])


def test_learn_none_deletes_and_a_later_learn_overrides_the_delete(fake: FakeRedis) -> None:
    store = L2Store(fake)
    store.commit([Learn(1, H1, 1), Learn(1, H2, 2)])
    store.commit([Learn(1, H1, None), Learn(1, H2, None), Learn(1, H2, 5)])
    assert sorted(fake.executed[1]) == sorted([("hdel", macs_key(1), mac_text(H1)),
                                               ("hset", macs_key(1), mac_text(H2), 5)])
    assert store.load(1) == {H2: 5}


def test_a_learn_then_its_delete_in_one_batch_leaves_no_entry(fake: FakeRedis) -> None:
    store = L2Store(fake)
    store.commit([Learn(1, H1, 3), Count(1, "packet_in"), Learn(1, H1, None)])
    assert store.load(1) == {}
    assert store.stats(1) == {"packet_in": 1}


def test_anything_but_learn_or_count_is_refused_before_sending(fake: FakeRedis) -> None:
    with pytest.raises(TypeError, match="not a store write"):
        L2Store(fake).commit([Count(1, "packet_in"), ("hset", "x")])
    assert fake.pipelines == 0, "nothing may be half-sent"


def test_load_round_trips_what_commit_wrote(fake: FakeRedis) -> None:
    store = L2Store(fake)
    table = {H1: 1, H2: 65534, bytes.fromhex("ffeeddccbbaa"): 0xFFFFFF00}
    store.commit([Learn(7, mac, port) for mac, port in table.items()])
    assert store.load(7) == table
    assert store.load(8) == {}, "an unknown switch loads as empty"


def test_stats_round_trip(fake: FakeRedis) -> None:
    store = L2Store(fake)
    store.commit([Count(3, "packet_in"), Count(3, "host:" + mac_text(H1))])
    store.commit([Count(3, "packet_in", 2)])
    assert store.stats(3) == {"packet_in": 3, "host:00:00:00:00:00:a1": 1}


WRITES = st.lists(st.one_of(
    st.builds(Learn, st.sampled_from([1, 2]), st.sampled_from([H1, H2]),
              st.one_of(st.none(), st.integers(1, 3))),
    st.builds(Count, st.sampled_from([1, 2]), st.sampled_from(["packet_in", "flooded"]),
              st.integers(1, 3)),
), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(WRITES, max_size=5))
def test_combined_commit_equals_applying_each_write_in_order(batches: List[List[Any]]) -> None:
    """Combining is invisible: Redis ends as if every write had been sent on its own."""
    fake = FakeRedis()
    store = L2Store(fake)
    macs: Dict[int, Dict[bytes, int]] = {}
    stats: Dict[int, Counter] = {}
    for batch in batches:
        store.commit(batch)
        for w in batch:
            if isinstance(w, Learn):
                if w.port is None:
                    macs.setdefault(w.dpid, {}).pop(w.mac, None)
                else:
                    macs.setdefault(w.dpid, {})[w.mac] = w.port
            else:
                stats.setdefault(w.dpid, Counter())[w.field] += w.n
    assert fake.pipelines == sum(1 for b in batches if b)
    for dpid in (1, 2):
        assert store.load(dpid) == macs.get(dpid, {})
        assert store.stats(dpid) == dict(stats.get(dpid, {}))
    for sent in fake.executed:
        keys = [(c[1], c[2]) for c in sent]
        assert len(keys) == len(set(keys)), "one command per hash field and batch"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.sampled_from([H1, H2, b"\xff" * 6]),
                          st.sampled_from([H1, H2, b"\xff" * 6])), max_size=40),
       st.integers(1, 10))
def test_learning_core_and_store_agree_after_batched_commits(
        pkts: List[Tuple[int, bytes, bytes]], batch: int) -> None:
    """The app's loop: decide, gather writes, commit every `batch` packet-ins; then Redis loaded
    back equals the cache, as a restarted controller would see it."""
    fake = FakeRedis()
    store, core = L2Store(fake), LearningCore()
    pending: List[object] = []
    for n, (port, src, dst) in enumerate(pkts, 1):
        pending += core.packet_in(5, port, src, dst)[1]
        if n % batch == 0:
            pending += core.port_down(5, 3)
            store.commit(pending)
            pending = []
    store.commit(pending)
    assert store.load(5) == core.tables.get(5, {})
    if pkts:
        assert store.stats(5)["packet_in"] == len(pkts)


# -- connect: error messages ----------------------------------------------------------------------

class _FailingRedis:
    """Stands in for redis.Redis: its ping raises what the test chose."""

    error: BaseException = redis.ConnectionError("boom")

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs

    def ping(self) -> bool:
        raise self.error


@pytest.mark.parametrize("error,expected", [
    (redis.AuthenticationError("invalid password"), "refused the password"),
    (redis.ResponseError("NOAUTH Authentication required."), "wants a password"),
    (redis.ResponseError("ERR unknown command"), "ERR unknown command"),
    (redis.ConnectionError("Connection refused"), "is unreachable"),
    (redis.TimeoutError("Timeout"), "is unreachable"),
])
def test_connect_turns_redis_errors_into_one_line_store_errors(
        monkeypatch: pytest.MonkeyPatch, error: BaseException, expected: str) -> None:
    monkeypatch.setattr(_FailingRedis, "error", error)
    monkeypatch.setattr(store_mod.redis, "Redis", _FailingRedis)
    with pytest.raises(StoreError, match=expected) as info:
        store_mod.connect("10.0.0.9", 16379, "pw")
    assert "10.0.0.9:16379" in str(info.value)
    assert "\n" not in str(info.value)


def test_load_through_a_real_redis_gives_back_every_host(tmp_path: Any) -> None:
    """The Lua flattening against Redis itself: 1000 hosts, an empty switch, a forgotten host."""
    server = PrivateRedis(tmp_path)
    try:
        store = L2Store(server.connect())
        table = {bytes([2, 0x5A, 0, 0, i >> 8, i & 0xFF]): i % 48 + 1 for i in range(1000)}
        store.commit([Learn(7, mac, port) for mac, port in table.items()])
        assert store.load(7) == table
        assert store.load(8) == {}
        gone = next(iter(table))
        store.commit([Learn(7, gone, None)])
        del table[gone]
        assert store.load(7) == table
    finally:
        server.close()
