"""Example tests for the ERC / Meta-Migration cores: one or more per row of the three state tables
at the top of `ryu_apps/erc/core.py` (initiator per candidate, initiator migration, candidate).

The cores are pure: each test plays the switch, the bus and the apps by hand with explicit `now`
values, and checks the actions returned and the state reached. `test_erc_model.py` drives the
same cores against a model of Open vSwitch with every interleaving, loss and crash.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

import pytest

from ryu_apps.erc import wire
from ryu_apps.erc.core import (COMMIT_TIMEOUT_S, LINGER_S, QUERY_EVERY_S, RESCUE_GRACE_S, Cand,
                               CandidateCore, Claim, answer_stray,
                               DropBuffer, DropState, Finished, InitiatorCore, Mig,
                               MigrationError, Note, PlaceMarker, PublishSnapshot, Release,
                               RequestRole, Restore, Send, Standby, Step, TakeSnapshot, split_gap)
from ryu_apps.roles.core import GEN_MASK, Role

MIG, DPID, INIT = "m1", 0x1F, "ctl-a"
GEN = 7
SNAP, DIGEST = b'{"mac": 1}', "d1"
T = TypeVar("T")


@dataclass(frozen=True)
class Pkt:
    """A packet-in as the adapter holds it: the core only looks at its raw bytes (`buf`)."""

    buf: bytes


def pkt(n: int) -> Pkt:
    return Pkt(b"pkt-%d" % n)


def of(actions: List[Any], kind: Type[T]) -> List[T]:
    return [a for a in actions if isinstance(a, kind)]


def sent(actions: List[Any], type_: Optional[str] = None) -> List[Tuple[str, str]]:
    """(to, type) of every Send, in order."""
    return [(a.to, a.type) for a in of(actions, Send) if type_ is None or a.type == type_]


def msg(type_: str, src: str, body: Optional[Dict[str, Any]] = None, payload: bytes = b"",
        mig: str = MIG) -> wire.Msg:
    """A peer message as it comes off the bus (round-tripped through the wire format)."""
    return wire.decode(wire.encode(wire.Msg(type_, mig, DPID, src, body or {}, payload)))


def status(src: str, gen: int = GEN) -> wire.Msg:
    return msg(wire.STATUS, src, {"role": "EQUAL", "gen": gen, "synthetic": True})


def ack(src: str, digest: str = DIGEST) -> wire.Msg:
    return msg(wire.STATE_ACK, src, {"digest": digest})


def initiator(cands: Tuple[str, ...] = ("b", "c"), **kw: Any) -> InitiatorCore:
    core = InitiatorCore(MIG, DPID, INIT, list(cands), **kw)
    core.start(0.0, GEN)
    return core


def to_sent(core: InitiatorCore, c: str, snapshot: bool = True) -> List[Any]:
    """Candidate c through phase 1 and its marker (and the snapshot): STATE sent to it."""
    core.on_peer(0.1, status(c))
    out = core.marker_seen(0.2, core.tag_base + core.cands[c].index)
    if snapshot and core.snapshot is None:
        out += core.snapshot_ready(0.3, SNAP, DIGEST)
    assert core.cands[c].state is Cand.SENT
    return out


def committed(cands: Tuple[str, ...] = ("b",), **kw: Any) -> InitiatorCore:
    """Phase-2 migration committed to the first candidate."""
    core = initiator(cands, **kw)
    to_sent(core, cands[0])
    core.on_peer(0.4, ack(cands[0]))
    assert core.state is Mig.COMMITTED and core.winner == cands[0]
    return core


def switched(cands: Tuple[str, ...] = ("b",), **kw: Any) -> InitiatorCore:
    core = committed(cands, **kw)
    assert core.role_status(0.5, Role.SLAVE, core.commit_gen) == [RequestRole(Role.EQUAL)]
    assert core.state is Mig.SWITCHED
    return core


# -- construction -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, words", [
    (dict(candidates=[]), "no candidate"),
    (dict(candidates=["b", "b"]), "twice"),
    (dict(candidates=["b", INIT]), "current master"),
    (dict(candidates=["b"], commit="phase3"), "committing point"),
    (dict(candidates=["b"], transfer="carrier-pigeon"), "transfer"),
])
def test_initiator_refuses_a_bad_request_before_anything_changes(kw: Dict[str, Any],
                                                                 words: str) -> None:
    with pytest.raises(MigrationError, match=words):
        InitiatorCore(MIG, DPID, INIT, **kw)


def test_start_invites_every_candidate_with_its_own_index_and_tag() -> None:
    core = InitiatorCore(MIG, DPID, INIT, ["b", "c"], tag_base=100, commit="phase1",
                         transfer="shared", candidate_timeout=4.0)
    out = core.start(0.0, GEN | (1 << 64))           # masked to 64 bits
    assert core.generation_id == GEN
    assert sent(out) == [("b", wire.START), ("c", wire.START)]
    # Standby before anything: applied by the switch before the first marker that follows it.
    assert out[0] == Standby(True)
    for i, a in enumerate(out[1:]):
        assert a.body == {"commit": "phase1", "transfer": "shared", "deadline_s": 4.0,
                          "initiator": INIT, "candidates": ["b", "c"], "index": i, "tag": 100 + i}
    assert core.state is Mig.RUNNING and core.watched() == ["b", "c"]
    assert core.record()["mode"] == "meta"


def test_candidate_from_start_asks_for_equal_and_rejects_a_start_without_tag_or_deadline() -> None:
    start = msg(wire.START, INIT, {"tag": 3, "deadline_s": 5})
    core, out = CandidateCore.from_start(1.0, "b", start)
    assert out == [RequestRole(Role.EQUAL)]
    assert (core.step, core.tag, core.deadline, core.initiator) == (Step.JOINING, 3, 6.0, INIT)
    for body in ({"deadline_s": 5}, {"tag": "3", "deadline_s": 5}, {"tag": 3}):
        with pytest.raises(wire.WireError):
            CandidateCore.from_start(1.0, "b", msg(wire.START, INIT, body))


# -- initiator, per candidate -------------------------------------------------------------------------

def test_invited_status_equal_places_the_candidates_marker() -> None:
    core = initiator()
    out = core.on_peer(0.1, status("c", gen=9))
    assert of(out, PlaceMarker) == [PlaceMarker(1)]
    assert len(of(out, Note)) == 1 and "synthetic" in of(out, Note)[0].text
    assert core.cands["c"].state is Cand.EQUAL and core.cands["c"].gen == 9
    assert core.on_peer(0.2, status("c")) == [], "a second STATUS changes nothing"


def test_status_with_another_role_is_ignored() -> None:
    core = initiator()
    assert core.on_peer(0.1, msg(wire.STATUS, "b", {"role": "SLAVE", "gen": 1})) == []
    assert core.cands["b"].state is Cand.INVITED


@pytest.mark.parametrize("how", ["refuse", "gone"])
def test_invited_refuse_or_gone_fails_that_candidate_only(how: str) -> None:
    core = initiator()
    out = (core.on_peer(0.1, msg(wire.REFUSE, "b", {"reason": "busy"})) if how == "refuse"
           else core.peer_gone(0.1, "b"))
    assert sent(out) == [("b", wire.ROLLBACK)]
    assert core.cands["b"].state is Cand.FAILED and core.state is Mig.RUNNING
    assert core.watched() == ["c"]


def test_invited_deadline_aborts_the_migration() -> None:
    core = initiator(timeout=10.0)
    assert core.tick(9.9) == []
    out = core.tick(10.0)
    assert sorted(sent(out)) == [("b", wire.ROLLBACK), ("c", wire.ROLLBACK)]
    assert of(out, Finished) == [Finished("aborted", "timed out before the committing point")]
    assert core.state is Mig.ABORTED


def test_equal_marker_freezes_takes_the_snapshot_once_and_state_follows_it() -> None:
    core = initiator()
    core.on_peer(0.1, status("b"))
    core.on_peer(0.1, status("c"))
    assert core.packet_in(0.15, pkt(0)) is False, "before the freeze point: ours to answer"
    out = core.marker_seen(0.2, 0)
    assert out == [TakeSnapshot()] and core.frozen and core.cands["b"].state is Cand.MARKED
    assert core.packet_in(0.25, pkt(1)) is True
    assert core.marker_seen(0.3, 1) == [], "one snapshot serves every candidate"
    assert core.cands["c"].state is Cand.MARKED
    out = core.snapshot_ready(0.4, SNAP, DIGEST)
    assert sent(out) == [("b", wire.STATE), ("c", wire.STATE)]
    assert core.snapshot_ready(0.5, b"other", "d2") == [], "the snapshot is taken once"


def test_marker_after_the_snapshot_sends_state_at_once() -> None:
    core = initiator()
    to_sent(core, "b")
    core.on_peer(0.5, status("c"))
    out = core.marker_seen(0.6, 1)
    assert sent(out) == [("c", wire.STATE)] and core.cands["c"].state is Cand.SENT


def test_unknown_marker_tags_are_ignored() -> None:
    core = initiator(tag_base=50)
    assert core.marker_seen(0.1, 0) == [] and not core.frozen
    assert core.marker_seen(0.1, 52) == []


def test_state_carries_the_snapshot_and_the_gap_of_that_candidate() -> None:
    """Gap j = what the initiator buffered between its freeze point and marker j."""
    core = initiator()
    core.on_peer(0.1, status("b"))
    core.on_peer(0.1, status("c"))
    core.marker_seen(0.2, 0)                     # freeze point F = marker of b: gap(b) empty
    assert core.packet_in(0.2, pkt(1)) and core.packet_in(0.2, pkt(2))
    core.marker_seen(0.3, 1)                     # gap(c) = [1, 2]
    assert core.packet_in(0.3, pkt(3))
    out = {a.to: a for a in core.snapshot_ready(0.4, SNAP, DIGEST)}
    for c, gap in (("b", []), ("c", [pkt(1).buf, pkt(2).buf])):
        body, payload = out[c].body, out[c].payload
        assert body["digest"] == DIGEST and body["gap"] == len(gap)
        assert body["snapshot_len"] == len(SNAP) == body["size"]
        assert payload[:len(SNAP)] == SNAP
        assert split_gap(payload[len(SNAP):]) == gap
    assert core.record()["gap"] == 2 and core.buffered == 3


def test_shared_transfer_publishes_once_and_sends_the_key_and_gap_only() -> None:
    core = initiator(("b", "c"), transfer="shared")
    core.on_peer(0.1, status("b"))
    core.on_peer(0.1, status("c"))
    core.marker_seen(0.2, 0)
    core.packet_in(0.2, pkt(1))
    out = core.snapshot_ready(0.3, SNAP, DIGEST)
    assert out[0] == PublishSnapshot()
    (state,) = of(out, Send)
    assert state.body["key"] == wire.xfer_key(MIG) and "snapshot_len" not in state.body
    assert split_gap(state.payload) == []
    (later,) = core.marker_seen(0.4, 1)          # c's gap travels with the key, the snapshot not
    assert later.body["key"] == wire.xfer_key(MIG) and split_gap(later.payload) == [pkt(1).buf]


def test_split_gap_rejects_truncated_data() -> None:
    assert split_gap(b"") == []
    assert split_gap(b"\0\0\0\0") == [b""]
    for bad in (b"\0\0", b"\0\0\0\5abc"):
        with pytest.raises(wire.WireError):
            split_gap(bad)


def test_sent_ack_with_the_right_digest_commits_phase2() -> None:
    """The winner's COMMIT goes out before the losers' ROLLBACKs: it is the one on the clock."""
    core = initiator(("b", "c"))
    to_sent(core, "b")
    out = core.on_peer(0.5, ack("b"))
    assert out == [Claim("b"), Send("b", wire.COMMIT, {"gen": GEN + 1}),
                   Send("c", wire.ROLLBACK, {"reason": "b won"})]
    assert core.cands["b"].state is Cand.WINNER and core.cands["c"].state is Cand.LOSER
    assert core.state is Mig.COMMITTED and core.commit_gen == GEN + 1
    assert core.watched() == ["b"]


@pytest.mark.parametrize("restore_ms,kept", [(12.5, 12.5), (True, None), ("3", None)])
def test_the_record_has_every_mark_and_the_restore_time_the_candidate_reported(
        restore_ms: Any, kept: Optional[float]) -> None:
    core = initiator(("b",))
    to_sent(core, "b")
    core.on_peer(0.5, msg(wire.STATE_ACK, "b", {"digest": DIGEST, "restore_ms": restore_ms}))
    rec = core.record()
    assert rec["detail"]["b"]["restore_ms"] == kept
    assert {"start", "freeze", "snapshot"} <= set(rec["marks_ms"])
    assert {"start", "status", "marker", "state_sent", "ack"} <= set(rec["detail"]["b"]["marks_ms"])


def test_sent_ack_with_a_bad_digest_fails_that_candidate() -> None:
    core = initiator(("b", "c"))
    to_sent(core, "b")
    out = core.on_peer(0.5, ack("b", digest="tampered"))
    assert out == [Send("b", wire.ROLLBACK, {"reason": "state digest mismatch"})]
    assert core.cands["b"].state is Cand.FAILED and core.state is Mig.RUNNING
    assert core.on_peer(0.6, ack("b")) == [], "a failed candidate's late word is ignored"


def test_ack_before_state_is_ignored() -> None:
    core = initiator()
    core.on_peer(0.1, status("b"))
    assert core.on_peer(0.2, ack("b")) == [] and core.cands["b"].state is Cand.EQUAL


def test_commit_generation_wraps_at_64_bits() -> None:
    core = InitiatorCore(MIG, DPID, INIT, ["b"])
    core.start(0.0, GEN_MASK)
    to_sent(core, "b")
    out = core.on_peer(0.5, ack("b"))
    assert of(out, Send)[-1].body == {"gen": 0}


# -- the committing point -------------------------------------------------------------------------------

def test_phase1_commit_first_status_wins_others_rolled_back_once_and_get_no_marker() -> None:
    core = initiator(("b", "c", "d"), commit="phase1")
    out = core.on_peer(0.1, status("c"))
    assert of(out, Claim) == [Claim("c")] and of(out, PlaceMarker) == [PlaceMarker(1)]
    assert sorted(sent(out, wire.ROLLBACK)) == [("b", wire.ROLLBACK), ("d", wire.ROLLBACK)]
    assert core.winner == "c" and core.state is Mig.RUNNING
    for late in (status("b"), ack("b"), msg(wire.REFUSE, "d"), msg(wire.END_MIGRATION, "d")):
        assert core.on_peer(0.2, late) == [], f"loser's {late.type} must be ignored"
    assert core.peer_gone(0.2, "b") == []
    core.marker_seen(0.3, 1)
    core.snapshot_ready(0.4, SNAP, DIGEST)
    out = core.on_peer(0.5, ack("c"))
    assert out == [Send("c", wire.COMMIT, {"gen": GEN + 1})]


def test_phase2_commit_every_equal_candidate_gets_a_marker_and_first_ack_wins() -> None:
    core = initiator(("b", "c", "d"))
    for c in ("b", "c", "d"):
        assert of(core.on_peer(0.1, status(c)), PlaceMarker)
    for c in ("b", "c", "d"):
        core.marker_seen(0.2, core.cands[c].index)
    core.snapshot_ready(0.3, SNAP, DIGEST)
    out = core.on_peer(0.4, ack("d"))
    assert sorted(sent(out, wire.ROLLBACK)) == [("b", wire.ROLLBACK), ("c", wire.ROLLBACK)]
    assert core.winner == "d"
    assert core.on_peer(0.5, ack("b")) == [] and core.on_peer(0.5, ack("c")) == []
    assert core.on_peer(0.5, msg(wire.END_MIGRATION, "b")) == []
    assert core.state is Mig.COMMITTED


def test_phase1_winner_refusing_before_commit_aborts_although_others_were_fine() -> None:
    """Past the committing point there is no going back to a loser: Meta aborts."""
    core = initiator(("b", "c"), commit="phase1")
    core.on_peer(0.1, status("b"))
    out = core.on_peer(0.2, msg(wire.REFUSE, "b", {"reason": "deadline"}))
    assert sent(out) == [("b", wire.ROLLBACK)]
    assert core.state is Mig.ABORTED and "winner b refused" in core.reason


def test_phase1_winner_bad_digest_aborts() -> None:
    core = initiator(("b",), commit="phase1")
    to_sent(core, "b")
    core.packet_in(0.35, pkt(1))
    out = core.on_peer(0.4, ack("b", "bad"))
    assert of(out, Release) == [Release((pkt(1),))]
    assert core.state is Mig.ABORTED and core.outcome == "aborted"


# -- Fixed (k = 1) and Meta -------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["refuse", "gone", "timeout"])
def test_fixed_rolls_back_when_its_only_candidate_fails(how: str) -> None:
    core = initiator(("b",), timeout=10.0)
    to_sent(core, "b")
    for n in range(3):
        assert core.packet_in(0.5, pkt(n))
    if how == "refuse":
        out = core.on_peer(1.0, msg(wire.REFUSE, "b", {"reason": "deadline passed"}))
    elif how == "gone":
        out = core.peer_gone(1.0, "b")
    else:
        out = core.tick(10.0)
    assert sent(out) == [("b", wire.ROLLBACK)]
    assert of(out, Release) == [Release((pkt(0), pkt(1), pkt(2)))], "buffer back to our apps"
    assert len(of(out, Finished)) == 1 and core.state is Mig.ABORTED
    assert core.packet_in(1.1, pkt(9)) is False, "after the abort we answer as master again"
    assert core.record()["mode"] == "fixed" and core.record()["winner"] is None


def test_meta_finishes_on_another_candidate_when_one_vanishes() -> None:
    core = initiator(("b", "c"))
    to_sent(core, "b")
    core.on_peer(0.4, status("c"))
    core.marker_seen(0.45, 1)
    assert sent(core.peer_gone(0.5, "b")) == [("b", wire.ROLLBACK)]
    assert core.state is Mig.RUNNING
    out = core.on_peer(0.6, ack("c"))
    assert of(out, Claim) == [Claim("c")] and sent(out, wire.COMMIT) == [("c", wire.COMMIT)]
    rec = core.record()
    assert rec["detail"]["b"]["result"] == "vanished"


def test_every_candidate_failing_aborts_with_their_reasons() -> None:
    core = initiator(("b", "c"))
    core.peer_gone(0.1, "b")
    out = core.on_peer(0.2, msg(wire.REFUSE, "c", {"reason": "full"}))
    assert core.state is Mig.ABORTED
    assert "b vanished" in of(out, Finished)[0].reason and "c refused: full" in core.reason


# -- cancel -------------------------------------------------------------------------------------------------

def test_cancel_before_the_commit_rolls_everyone_back_and_releases_the_buffer() -> None:
    core = initiator(("b", "c"))
    to_sent(core, "b")
    core.packet_in(0.5, pkt(1))
    out = core.cancel(0.6)
    assert sorted(sent(out)) == [("b", wire.ROLLBACK), ("c", wire.ROLLBACK)]
    assert of(out, Release) == [Release((pkt(1),))]
    assert of(out, Finished) == [Finished("cancelled", "cancelled by the operator")]
    assert out[0] == Claim(INIT, force=True), "a candidate whose ROLLBACK is lost cannot rescue"
    assert core.finished and core.watched() == []
    assert core.on_peer(0.7, ack("b")) == [] and core.tick(99.0) == []


def test_cancel_after_the_commit_is_refused() -> None:
    core = committed()
    with pytest.raises(MigrationError, match="too late"):
        core.cancel(1.0)
    assert core.state is Mig.COMMITTED


# -- the initiator after COMMIT -------------------------------------------------------------------------------

def test_committed_role_status_slave_makes_us_an_equal_standby() -> None:
    core = committed()
    assert core.role_status(0.5, Role.EQUAL, GEN + 1) == [], "only a demotion counts"
    assert core.role_status(0.5, Role.SLAVE, GEN + 1) == [RequestRole(Role.EQUAL)]
    assert core.state is Mig.SWITCHED
    assert core.packet_in(0.6, pkt(5)) is True, "a standby still buffers"


def test_switched_end_migration_ends_the_time_and_drained_drops_buffer_and_state() -> None:
    """END_MIGRATION is the migration's end (its time); the standby and our copy of the buffer
    stay until DRAINED, so a winner dying mid-drain loses nothing."""
    core = switched(("b", "c"))
    core.packet_in(0.6, pkt(1))
    assert core.on_peer(0.7, msg(wire.END_MIGRATION, "b", {"marks_ms": {"master": 1.0}})) == []
    assert core.state is Mig.SWITCHED and core.buffer == [pkt(1)]
    assert core.packet_in(0.75, pkt(2)) is True, "still the standby"
    out = core.on_peer(0.9, msg(wire.DRAINED, "b", {"marks_ms": {"flushed": 5.0}}))
    assert out == [DropBuffer(2, "b answers them"), DropState(), RequestRole(Role.SLAVE),
                   Standby(False), Finished("committed", "")]
    assert core.state is Mig.DONE and core.buffer == []
    rec = core.record()
    assert rec["winner"] == "b" and rec["outcome"] == "committed"
    assert set(rec["phases_ms"]) == {"phase1", "phase2", "phase3"}
    assert rec["total_ms"] == rec["marks_ms"]["end"] == 700.0, "the time ends at END_MIGRATION"
    assert rec["drain_ms"] == 200.0 and rec["marks_ms"]["finish"] == 900.0
    assert rec["detail"]["b"]["phase3_marks_ms"] == {"master": 1.0, "flushed": 5.0}
    assert core.packet_in(0.95, pkt(3)) is False


def test_end_migration_before_role_status_also_counts() -> None:
    """END and ROLE_STATUS travel on different channels: END (and DRAINED) may come first."""
    core = committed()
    assert core.on_peer(0.6, msg(wire.END_MIGRATION, "b")) == [] and core.t["end"] == 0.6
    out = core.on_peer(0.7, msg(wire.DRAINED, "b"))
    assert core.state is Mig.DONE and RequestRole(Role.SLAVE) in out


def test_end_and_drained_from_a_loser_or_while_retaking_are_ignored_and_end_keeps_its_first_time(
        ) -> None:
    core = switched(("b", "c"))
    assert core.on_peer(0.6, msg(wire.DRAINED, "c")) == [], "c lost the race"
    assert core.on_peer(0.6, msg(wire.END_MIGRATION, "c")) == [] and "end" not in core.t
    core.on_peer(0.7, msg(wire.END_MIGRATION, "b"))
    core.on_peer(0.8, msg(wire.END_MIGRATION, "b", {"again": True}))
    assert core.t["end"] == 0.7, "a repeated END does not move the end"
    core.peer_gone(0.9, "b")
    assert core.state is Mig.RETAKING
    assert core.on_peer(1.0, msg(wire.DRAINED, "b")) == []
    assert core.on_peer(1.0, msg(wire.END_MIGRATION, "b")) == []
    assert core.state is Mig.RETAKING


def test_lost_end_migration_only_loses_the_mark_drained_ends_the_migration() -> None:
    core = switched()
    out = core.on_peer(0.8, msg(wire.DRAINED, "b"))
    assert core.state is Mig.DONE and of(out, Finished) == [Finished("committed", "")]
    rec = core.record()
    assert rec["total_ms"] == 800.0 and rec["drain_ms"] is None


def test_switched_without_drained_in_time_asks_the_winner_and_keeps_the_standby() -> None:
    """Never guesses DRAINED: a winner still flushing that dies later would take the buffer along."""
    core = switched(timeout=10.0)
    core.packet_in(0.6, pkt(1))
    assert core.tick(10.4) == []
    out = core.tick(10.5)
    assert sent(out) == [("b", wire.END_QUERY)] and len(of(out, Note)) == 1
    assert core.state is Mig.SWITCHED and core.buffer == [pkt(1)]
    assert core.tick(10.5 + QUERY_EVERY_S - 0.01) == []
    assert sent(core.tick(10.5 + QUERY_EVERY_S)) == [("b", wire.END_QUERY)], "again, no Note"
    assert core.on_peer(11.9, msg(wire.END_MIGRATION, "b")) == [], "END alone is not enough"
    out = core.on_peer(12.0, msg(wire.DRAINED, "b", {"again": True}))
    assert core.state is Mig.DONE and DropBuffer(1, "b answers them") in out


@pytest.mark.parametrize("when", ["committed", "switched"])
def test_winner_gone_after_commit_retakes_master_fenced_then_releases(when: str) -> None:
    core = committed() if when == "committed" else switched()
    core.packet_in(0.6, pkt(1))
    core.packet_in(0.6, pkt(2))
    out = core.peer_gone(0.7, "b")
    assert out == [RequestRole(Role.MASTER, GEN + 2, fenced=True)]
    assert core.state is Mig.RETAKING and core.watched() == []
    assert core.packet_in(0.8, pkt(3)) is True, "still buffering until MASTER is back"
    assert core.role_confirmed(0.9, Role.EQUAL, GEN + 2) == []
    out = core.role_confirmed(0.9, Role.MASTER, GEN + 2)
    assert out == [Claim(INIT, force=True), Standby(False), Release((pkt(1), pkt(2), pkt(3))),
                   Finished("retaken", "winner b vanished")], "claimed: a late rescue loses"
    assert core.state is Mig.RETAKEN and core.record()["winner"] is None


def test_no_role_status_in_time_after_commit_retakes() -> None:
    core = committed()
    t0 = core.t["commit"]
    assert core.tick(t0 + COMMIT_TIMEOUT_S - 0.01) == []
    assert core.tick(t0 + COMMIT_TIMEOUT_S) == [RequestRole(Role.MASTER, GEN + 2, fenced=True)]


def test_winner_refusing_after_commit_retakes() -> None:
    core = committed()
    out = core.on_peer(0.6, msg(wire.REFUSE, "b", {"reason": "deadline passed without COMMIT"}))
    assert out == [RequestRole(Role.MASTER, GEN + 2, fenced=True)]


def test_retake_refused_as_stale_asks_again_unfenced() -> None:
    core = committed()
    core.peer_gone(0.7, "b")
    assert core.role_refused(0.8) == [RequestRole(Role.MASTER)]
    assert committed().role_refused(0.8) == [], "only while retaking"


def test_end_from_the_winner_while_running_or_from_a_stranger_is_ignored() -> None:
    core = initiator(("b",))
    to_sent(core, "b")
    assert core.on_peer(0.5, msg(wire.END_MIGRATION, "b")) == []
    assert core.on_peer(0.5, msg(wire.DRAINED, "b")) == []
    assert core.on_peer(0.5, msg(wire.STATUS, "zz", {"role": "EQUAL"})) == []
    assert core.on_peer(0.5, msg(wire.STATE_ACK, "b", {"digest": DIGEST}, mig="other")) == []
    assert core.state is Mig.RUNNING and core.cands["b"].state is Cand.SENT


def test_winner_gone_again_while_retaking_changes_nothing() -> None:
    """The retake has begun (here: no ROLE_STATUS in time); then the winner is reported gone.
    (Was a bug: `_fail` aborted, released the buffer before MASTER was confirmed, and left the
    standby on.)"""
    core = committed()
    core.packet_in(0.6, pkt(1))
    core.tick(core.t["commit"] + COMMIT_TIMEOUT_S)
    assert core.peer_gone(3.0, "b") == []
    assert core.state is Mig.RETAKING
    out = core.role_confirmed(3.1, Role.MASTER, GEN + 2)
    assert out[:3] == [Claim(INIT, force=True), Standby(False), Release((pkt(1),))]


def test_winner_refusing_while_retaking_changes_nothing() -> None:
    """The winner's deadline passed (its COMMIT was lost) after the COMMIT timeout started the
    retake. (Was a bug: any REFUSE from the winner after RUNNING retook again: a second MASTER
    request for nothing, and the recorded reason overwritten.)"""
    core = committed()
    core.tick(core.t["commit"] + COMMIT_TIMEOUT_S)
    reason = core.reason
    assert core.on_peer(6.0, msg(wire.REFUSE, "b", {"reason": "deadline passed"})) == []
    assert core.reason == reason


# -- candidate ---------------------------------------------------------------------------------------------

def candidate(tag: int = 1, deadline_s: float = 5.0, me: str = "b") -> CandidateCore:
    core, _ = CandidateCore.from_start(0.0, me, msg(wire.START, INIT,
                                                    {"tag": tag, "deadline_s": deadline_s}))
    return core


def equal(**kw: Any) -> CandidateCore:
    core = candidate(**kw)
    out = core.role_confirmed(0.1, Role.EQUAL, GEN)
    assert out[0] == Send(INIT, wire.STATUS, {"role": "EQUAL", "gen": GEN, "synthetic": True})
    assert core.step is Step.EQUAL
    return core


def state_msg(gap: Tuple[Pkt, ...] = (), snap: bytes = SNAP) -> wire.Msg:
    raw = b"".join(len(p.buf).to_bytes(4, "big") + p.buf for p in gap)
    return msg(wire.STATE, INIT, {"digest": DIGEST, "size": len(snap), "gap": len(gap),
                                  "snapshot_len": len(snap)}, snap + raw)


def ready(gap: Tuple[Pkt, ...] = (), **kw: Any) -> CandidateCore:
    core = equal(**kw)
    core.marker_seen(0.2, core.tag)
    (restore,) = core.on_peer(0.3, state_msg(gap))
    parsed = tuple(Pkt(b) for b in split_gap(restore.gap))
    assert core.restored_state(0.4, DIGEST, parsed) == [Send(INIT, wire.STATE_ACK,
                                                             {"digest": DIGEST, "restore_ms": 100.0})]
    assert core.step is Step.READY
    return core


def test_joining_role_equal_relays_a_synthetic_controller_status() -> None:
    core = candidate()
    assert core.role_confirmed(0.1, Role.MASTER, GEN) == [], "only EQUAL ends phase 1"
    out = core.role_confirmed(0.1, Role.EQUAL, GEN)
    assert sent(out) == [(INIT, wire.STATUS)] and "synthetic" in of(out, Note)[0].text
    assert core.role_confirmed(0.2, Role.EQUAL, GEN) == [], "said once"


def test_equal_buffers_only_from_its_own_marker() -> None:
    core = equal(tag=1)
    assert core.packet_in(0.2, pkt(1)) is False
    assert core.marker_seen(0.2, 0) == [] and not core.marked, "another candidate's marker"
    assert core.packet_in(0.2, pkt(2)) is False
    assert core.marker_seen(0.3, 1) == [] and core.marked
    assert core.packet_in(0.3, pkt(3)) is True and core.buffer == [pkt(3)]


def test_equal_state_is_restored_copy_mode() -> None:
    core = equal()
    gap = (pkt(1), pkt(2))
    (restore,) = core.on_peer(0.3, state_msg(gap))
    assert (restore.snapshot, restore.key, restore.digest) == (SNAP, "", DIGEST)
    assert split_gap(restore.gap) == [pkt(1).buf, pkt(2).buf]


def test_equal_state_shared_mode_takes_the_key_and_the_whole_payload_as_gap() -> None:
    core = equal()
    raw = len(pkt(1).buf).to_bytes(4, "big") + pkt(1).buf
    out = core.on_peer(0.3, msg(wire.STATE, INIT, {"digest": DIGEST, "key": wire.xfer_key(MIG),
                                                   "gap": 1}, raw))
    assert out == [Restore(b"", wire.xfer_key(MIG), DIGEST, raw)]


@pytest.mark.parametrize("body", [{"digest": DIGEST}, {"digest": DIGEST, "snapshot_len": 99},
                                  {"digest": DIGEST, "snapshot_len": -1},
                                  {"digest": DIGEST, "snapshot_len": "3"}])
def test_malformed_state_refuses_and_rolls_back(body: Dict[str, Any]) -> None:
    core = equal()
    core.marker_seen(0.2, core.tag)
    core.packet_in(0.2, pkt(1))
    out = core.on_peer(0.3, msg(wire.STATE, INIT, body, b"abc"))
    assert out[:3] == [RequestRole(Role.SLAVE), DropBuffer(1, "malformed STATE"), DropState()]
    assert sent(out) == [(INIT, wire.REFUSE)] and core.step is Step.OUT


@pytest.mark.parametrize("order", ["marker first", "state first"])
def test_restored_and_marked_acknowledges_the_digest_in_either_order(order: str) -> None:
    core = equal()
    if order == "marker first":
        assert core.marker_seen(0.2, core.tag) == []
    core.on_peer(0.3, state_msg())
    out = core.restored_state(0.4, "digest-of-what-we-restored", ())
    if order == "state first":
        assert out == [] and core.step is Step.EQUAL
        out = core.marker_seen(0.5, core.tag)
    assert out == [Send(INIT, wire.STATE_ACK, {"digest": "digest-of-what-we-restored",
                                                "restore_ms": 100.0})], "STATE in -> restored"
    assert core.step is Step.READY


def test_a_second_state_is_ignored_once_restored() -> None:
    core = ready()
    assert core.on_peer(0.5, state_msg()) == []
    assert core.restored_state(0.5, DIGEST, ()) == []


def test_ready_commit_asks_master_fenced_with_the_generation_given() -> None:
    core = ready()
    assert core.on_peer(0.5, msg(wire.COMMIT, INIT, {"gen": "8"})) == [], "gen must be an int"
    assert core.on_peer(0.5, msg(wire.COMMIT, INIT, {"gen": GEN + 1})) == [
        RequestRole(Role.MASTER, GEN + 1, fenced=True)]
    assert core.step is Step.TAKING


def test_commit_before_ready_is_ignored() -> None:
    core = equal()
    assert core.on_peer(0.5, msg(wire.COMMIT, INIT, {"gen": 8})) == []
    assert core.step is Step.EQUAL


def test_taking_master_confirmed_ends_then_releases_gap_then_buffer_in_order() -> None:
    core = ready(gap=(pkt(1), pkt(2)))
    assert core.packet_in(0.5, pkt(3))
    core.on_peer(0.6, msg(wire.COMMIT, INIT, {"gen": GEN + 1}))
    assert core.packet_in(0.7, pkt(4)), "still buffering while TAKING"
    assert core.on_peer(0.75, msg(wire.ROLLBACK, INIT)) == [], "too late to roll back"
    out = core.role_confirmed(0.8, Role.MASTER, GEN + 1)
    marks = {"commit": 0.0, "master": 200.0}  # ms from COMMIT, for the record
    assert out == [Send(INIT, wire.END_MIGRATION, {"marks_ms": marks}),
                   Release((pkt(1), pkt(2), pkt(3), pkt(4)), then_flushed=True)]
    assert core.step is Step.FLUSHING and core.buffer == [] and core.gap == ()
    assert core.packet_in(0.85, pkt(5)) is False, "flushing: answered as master"
    marks["flushed"] = 300.0
    assert core.flushed(0.9) == [Send(INIT, wire.DRAINED, {"marks_ms": marks}), Finished("won")]
    assert core.step is Step.MASTER and not core.live
    assert core.flushed(1.0) == [] and core.tick(99.0) == []


def test_taking_master_refused_as_stale_goes_out() -> None:
    core = ready(gap=(pkt(1),))
    core.packet_in(0.5, pkt(2))
    core.on_peer(0.6, msg(wire.COMMIT, INIT, {"gen": GEN + 1}))
    out = core.role_refused(0.7)
    assert out == [RequestRole(Role.SLAVE), DropBuffer(2, "refused MASTER (fenced by the initiator)"),
                   DropState(), Finished("rolled back", "refused MASTER (fenced by the initiator)")]
    assert core.step is Step.OUT


@pytest.mark.parametrize("step", ["taking", "flushing"])
def test_demoted_while_taking_over_goes_out(step: str) -> None:
    core = ready()
    core.on_peer(0.6, msg(wire.COMMIT, INIT, {"gen": GEN + 1}))
    if step == "flushing":
        core.role_confirmed(0.7, Role.MASTER, GEN + 1)
    assert core.role_status(0.8, Role.EQUAL, GEN + 2) == []
    out = core.role_status(0.8, Role.SLAVE, GEN + 2)
    assert of(out, DropState) and core.step is Step.OUT
    assert core.flushed(0.9) == [], "no DRAINED after being fenced out"


@pytest.mark.parametrize("step", ["joining", "equal", "ready"])
def test_rollback_before_taking_goes_out(step: str) -> None:
    core = {"joining": candidate, "equal": equal, "ready": ready}[step]()
    if step == "equal":
        core.marker_seen(0.2, core.tag)
        core.packet_in(0.2, pkt(1))
    out = core.on_peer(0.5, msg(wire.ROLLBACK, INIT, {"reason": "c won"}))
    assert out[0] == RequestRole(Role.SLAVE) and of(out, DropState)
    assert of(out, Finished) == [Finished("rolled back", "rolled back: c won")]
    assert core.step is Step.OUT and core.buffer == []
    assert core.packet_in(0.6, pkt(2)) is False
    assert core.on_peer(0.6, msg(wire.COMMIT, INIT, {"gen": 8})) == []


@pytest.mark.parametrize("step", ["joining", "equal", "ready"])
def test_deadline_without_commit_refuses_and_goes_out(step: str) -> None:
    core = {"joining": candidate, "equal": equal, "ready": ready}[step](deadline_s=5.0)
    if step != "joining":
        core.packet_in(1.0, pkt(1))
    assert core.tick(4.99) == []
    out = core.tick(5.0)
    assert out[0] == Send(INIT, wire.REFUSE, {"reason": "deadline passed without COMMIT"})
    assert out[1] == RequestRole(Role.SLAVE) and of(out, DropState) and core.step is Step.OUT
    assert core.tick(6.0) == []


def test_candidate_ignores_other_migrations_and_other_senders() -> None:
    core = ready()
    assert core.on_peer(0.5, msg(wire.COMMIT, INIT, {"gen": 8}, mig="m2")) == []
    assert core.on_peer(0.5, msg(wire.COMMIT, "ctl-z", {"gen": 8})) == []
    assert core.on_peer(0.5, msg(wire.ROLLBACK, "ctl-z")) == []
    assert core.step is Step.READY


# -- candidate: the initiator vanished ----------------------------------------------------------------

def test_initiator_gone_candidate_with_state_claims_at_once() -> None:
    core = ready(gap=(pkt(1),))
    core.packet_in(0.5, pkt(2))
    assert core.initiator_gone(1.0) == [Claim("b")]
    assert core.step is Step.CLAIMING
    assert core.initiator_gone(1.1) == [], "told once"
    out = core.claim_result(1.2, True)
    assert of(out, RequestRole) == [RequestRole(Role.MASTER)], "a normal (unfenced) request"
    assert core.step is Step.TAKING and core.rescue
    out = core.role_confirmed(1.3, Role.MASTER, GEN + 1)
    assert out == [Release((pkt(1), pkt(2)), then_flushed=True)], "no END: nobody to tell"
    assert core.flushed(1.4) == [Finished("rescued")], "no DRAINED either"


@pytest.mark.parametrize("step", ["joining", "equal"])
def test_initiator_gone_candidate_without_state_claims_after_the_grace(step: str) -> None:
    core = candidate() if step == "joining" else equal()
    assert core.initiator_gone(1.0) == []
    assert core.tick(1.0 + RESCUE_GRACE_S - 0.01) == []
    assert core.tick(1.0 + RESCUE_GRACE_S) == [Claim("b")]
    assert core.step is Step.CLAIMING


def test_initiator_gone_no_deadline_while_waiting_for_the_grace() -> None:
    core = equal(deadline_s=1.0)
    core.initiator_gone(0.9)
    assert core.tick(1.05) == [], "the rescue grace runs instead of the deadline"


def test_claim_lost_goes_out() -> None:
    core = ready()
    core.initiator_gone(1.0)
    out = core.claim_result(1.1, False)
    assert of(out, DropState) and core.step is Step.OUT
    assert core.claim_result(1.2, True) == [], "only while claiming"


def test_initiator_gone_after_commit_or_when_out_changes_nothing() -> None:
    core = ready()
    core.on_peer(0.6, msg(wire.COMMIT, INIT, {"gen": GEN + 1}))
    assert core.initiator_gone(1.0) == [] and core.step is Step.TAKING
    out = candidate()
    out.on_peer(0.5, msg(wire.ROLLBACK, INIT))
    assert out.initiator_gone(1.0) == [] and out.tick(9.0) == []


# -- initiator and candidates together ------------------------------------------------------------------

def _deliver(core: CandidateCore, actions: List[Any], now: float) -> List[Any]:
    """Hand the initiator's Sends for `core.me` to it (through the wire format)."""
    out: List[Any] = []
    for a in of(actions, Send):
        if a.to == core.me:
            out += core.on_peer(now, msg(a.type, INIT, a.body, a.payload))
    return out


def test_gap_and_buffer_reach_the_winner_so_it_holds_everything_from_the_freeze_point() -> None:
    """Two candidates; b's marker is the freeze point, c's comes later. The initiator's stream
    is 0 F 1 2 Mc 3, c's stream is 0 F 1 2 Mc 3 as well (all EQUAL): the initiator answers 0,
    c must end up with 1 2 (gap) and 3 (its buffer), in order."""
    ini = initiator(("b", "c"))
    cands = {c: candidate(tag=ini.tag_base + ini.cands[c].index, me=c) for c in ("b", "c")}
    for c, core in cands.items():
        ini.on_peer(0.1, msg(wire.STATUS, c, of(core.role_confirmed(0.1, Role.EQUAL, GEN),
                                                  Send)[0].body))
    stream = [("pkt", 0), ("mark", 0), ("pkt", 1), ("pkt", 2), ("mark", 1), ("pkt", 3)]
    answered_by_initiator, init_out = [], []
    for kind, n in stream:
        if kind == "pkt":
            if not ini.packet_in(0.2, pkt(n)):
                answered_by_initiator.append(n)
            for core in cands.values():
                core.packet_in(0.2, pkt(n))
        else:
            init_out += ini.marker_seen(0.2, n)
            for core in cands.values():
                core.marker_seen(0.2, n)
    assert answered_by_initiator == [0]
    init_out += ini.snapshot_ready(0.3, SNAP, DIGEST)
    c = cands["c"]
    (restore,) = _deliver(c, init_out, 0.4)
    gap = tuple(Pkt(b) for b in split_gap(restore.gap))
    assert gap == (pkt(1), pkt(2))
    out = ini.on_peer(0.5, msg(wire.STATE_ACK, "c", of(c.restored_state(0.5, DIGEST, gap),
                                                       Send)[0].body))
    assert ini.winner == "c"
    assert of(_deliver(cands["b"], out, 0.6), Finished), "b is rolled back"
    assert _deliver(c, out, 0.6) == [RequestRole(Role.MASTER, GEN + 1, fenced=True)]
    end, release = c.role_confirmed(0.7, Role.MASTER, GEN + 1)
    assert release.msgs == (pkt(1), pkt(2), pkt(3))
    assert ini.buffer == [pkt(1), pkt(2), pkt(3)]
    ini.role_status(0.7, Role.SLAVE, GEN + 1)
    assert ini.on_peer(0.75, msg(wire.END_MIGRATION, "c", end.body)) == []
    drained = c.flushed(0.8)
    assert of(ini.on_peer(0.9, msg(wire.DRAINED, "c", of(drained, Send)[0].body)),
              DropBuffer) == [DropBuffer(3, "c answers them")]


# -- bugs the model found (see test_erc_model.py), pinned here at the core ------------------------------

def winner_done() -> CandidateCore:
    core = ready()
    core.on_peer(0.6, msg(wire.COMMIT, INIT, {"gen": GEN + 1}))
    core.role_confirmed(0.7, Role.MASTER, GEN + 1)
    core.flushed(0.8)
    assert core.step is Step.MASTER
    return core


def test_winner_demoted_after_it_finished_drops_its_state() -> None:
    """The initiator suspected the winner (no ROLE_STATUS within COMMIT_TIMEOUT_S) and retook the
    switch after the winner had flushed and finished. (Was a bug: the winner kept the switch's
    state and still reported "won" while the initiator reported "retaken".)"""
    core = winner_done()
    assert core.lingering(0.8 + LINGER_S - 0.01) and not core.lingering(0.8 + LINGER_S)
    assert core.role_status(3.0, Role.EQUAL, GEN + 2) == []
    out = core.role_status(3.0, Role.SLAVE, GEN + 2)
    assert out[1:] == [RequestRole(Role.SLAVE), DropState()]
    assert core.step is Step.OUT and core.outcome == "won, then demoted"
    assert not core.lingering(3.1) and core.role_status(3.2, Role.SLAVE, GEN + 2) == []


@pytest.mark.parametrize("how", ["refused", "demoted while taking", "demoted while flushing",
                                 "demoted when done"])
def test_winner_fenced_by_a_retake_after_the_initiator_died_claims_instead_of_going_out(
        how: str) -> None:
    """The initiator retook with gen+2 (COMMIT timeout) and died before its retake finished:
    nobody is MASTER. (Was a bug: the winner ignored initiator_gone after COMMIT and went OUT.)
    It claims instead (the claim holds this winner unless the retake finished), then asks MASTER
    unfenced, and rescues."""
    core = winner_done() if how == "demoted when done" else ready()
    if how != "demoted when done":
        core.on_peer(0.6, msg(wire.COMMIT, INIT, {"gen": GEN + 1}))
    if how == "demoted while flushing":
        core.role_confirmed(0.7, Role.MASTER, GEN + 1)
    core.packet_in(2.4, pkt(9))
    assert core.initiator_gone(2.5) == [] and core.initiator_gone(2.55) == []
    out = core.role_refused(2.6) if how == "refused" else core.role_status(2.6, Role.SLAVE, GEN + 2)
    assert out[-1] == Claim("b") and core.step is Step.CLAIMING
    assert core.claim_result(2.7, True)[-1] == RequestRole(Role.MASTER)
    assert core.step is Step.TAKING and core.rescue
    core.role_confirmed(2.8, Role.MASTER, GEN + 3)
    assert core.flushed(2.9) == [Finished("rescued")]
    assert core.role_status(3.0, Role.SLAVE, GEN + 4)[-1] == DropState(), \
        "a rescuer does not claim twice"


def test_winner_fenced_by_a_finished_retake_loses_the_claim_and_goes_out() -> None:
    core = ready()
    core.on_peer(0.6, msg(wire.COMMIT, INIT, {"gen": GEN + 1}))
    core.initiator_gone(2.5)
    core.role_refused(2.6)
    out = core.claim_result(2.7, False)
    assert of(out, DropState) and core.step is Step.OUT


def test_end_query_is_answered_by_a_winner_that_finished_only() -> None:
    query = msg(wire.END_QUERY, INIT)
    core = ready()
    assert core.on_peer(1.0, query) == [], "not the winner (yet)"
    core.on_peer(1.0, msg(wire.COMMIT, INIT, {"gen": GEN + 1}))
    core.role_confirmed(1.1, Role.MASTER, GEN + 1)
    assert core.on_peer(1.2, query) == [], "flushing: DRAINED follows by itself"
    core.flushed(1.3)
    assert core.on_peer(1.4, query) == [Send(INIT, wire.DRAINED, {"again": True})]
    assert core.on_peer(1.4, msg(wire.END_QUERY, "ctl-z")) == []


def test_abandon_goes_out_like_a_rollback_and_only_once() -> None:
    core, _ = CandidateCore.from_start(1.0, "b", msg(wire.START, INIT, {"tag": 3, "deadline_s": 5}))
    out = core.abandon(1.5, "restore failed: boom")
    assert RequestRole(Role.SLAVE) in out and DropState() in out
    assert core.step is Step.OUT and core.abandon(1.6, "again") == []


@pytest.mark.parametrize("kind,master,answer", [
    (wire.COMMIT, False, (wire.REFUSE, {"reason": "not a candidate"})),
    (wire.COMMIT, True, (wire.REFUSE, {"reason": "not a candidate"})),
    (wire.END_QUERY, True, (wire.DRAINED, {"again": True})),
    (wire.END_QUERY, False, (wire.REFUSE, {"reason": "not master"})),
    (wire.STATE, True, None), (wire.ROLLBACK, False, None)])
def test_an_instance_without_candidacy_answers_only_what_the_initiator_waits_for(
        kind: str, master: bool, answer: Optional[Tuple[str, Dict[str, Any]]]) -> None:
    got = answer_stray(wire.Msg(kind, "m1", 1, "a", {}), master)
    assert got == (None if answer is None else Send("a", *answer))
