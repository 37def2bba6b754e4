"""experiments/barrier_lag.py: which packets count as stale (the pure part)."""
from __future__ import annotations

from experiments.barrier_lag import stale

UPDATES = [(2, 1.000, 1.010), (3, 2.000, 2.010)]  # version, ovs-ofctl started, returned


def test_a_packet_sent_after_its_versions_successor_was_answered_is_stale_with_its_lag():
    packets = [[0, 1.005, 1.006, 1], [1, 1.012, 1.013, 1], [2, 1.020, 1.021, 2],
               [3, 2.0105, 2.011, 2], [4, 2.5, 2.5, 3]]
    found = stale(packets, UPDATES)
    assert [(s["seq"], s["version"]) for s in found] == [(1, 1), (3, 2)]
    assert [round(s["lag_ms"], 3) for s in found] == [2.0, 0.5]


def test_the_newest_version_and_a_packet_before_the_barrier_are_never_stale():
    assert stale([[0, 1.009, 1.0095, 1], [1, 9.0, 9.0, 3]], UPDATES) == []
