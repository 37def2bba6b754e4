"""ERC role-exchange switch migration, Fixed and Meta-Migration, as two pure state machines. No I/O.

The initial master (the *initiator*) runs ERC toward k candidates at once (k = 1 is Fixed ERC).
Each candidate has its own `CandidateCore`; the initiator one `InitiatorCore` per migration.
Methods take `now` (seconds) and return actions for the adapter to carry out, in order.

Phase 1: the candidate asks the switch for EQUAL. OVS 3.1 never sends CONTROLLER_STATUS, so the
candidate synthesises it from its ROLE_REPLY(EQUAL) and relays it (STATUS). The initiator then
puts a *marker* in the switch streams: a dummy flow added and deleted, whose FLOW_REMOVED reaches
the initiator and every EQUAL candidate in stream order. The first marker the initiator sees is
its freeze point F: packet-ins before F are the initiator's to answer; from F on it buffers them
(and its state stops changing, so one snapshot taken at F serves every candidate). Candidate j
buffers from its own marker j; what the initiator buffered between F and marker j (the *gap*) is
sent to j with the state, so j holds exactly the packet-ins from F on, each once. (The adapter
hands PORT_STATUS messages to `packet_in` too: a port going down changes the apps' state, so it
is buffered, moved and released in its place among the packet-ins, never applied after F.)
Phase 2: snapshot (and gap) to the candidate, which restores it and acknowledges with the digest.
Phase 3: COMMIT to the winner, which asks for MASTER with the generation_id given (only the winner
ever asks for MASTER); the switch sends ROLE_STATUS(SLAVE) to the initiator. The winner, MASTER,
sends END_MIGRATION (the migration's end, where its time is measured, as in the paper) and then
answers its buffer in order. The initiator stays a standby (EQUAL, and asynchronous messages as
SLAVE), keeping its own copy of the buffer, until DRAINED: the winner answered all of it.
The committing point (the moment the winner is chosen: the first STATUS, or the first STATE_ACK)
is configurable; every other candidate is rolled back then, and whatever a loser sends afterwards
is ignored.

Initiator, per candidate ("cand"):

| cand state | event                          | action                                   | next        |
|------------|--------------------------------|------------------------------------------|-------------|
| INVITED    | STATUS(EQUAL)                  | marker(j) (phase-1 commit: only winner)  | EQUAL       |
| INVITED    | REFUSE / gone / deadline       | ROLLBACK (cand)                          | FAILED      |
| EQUAL      | marker j seen in own stream    | (snapshot ready?) STATE(snapshot+gap j)  | MARKED/SENT |
| MARKED     | snapshot ready                 | STATE(snapshot + gap j)                  | SENT        |
| SENT       | STATE_ACK(digest ok)           | (commit point) decide                    | ACKED       |
| SENT       | STATE_ACK(bad digest)          | ROLLBACK                                 | FAILED      |
| any live   | lost the race (another won)    | ROLLBACK                                 | LOSER       |

Initiator, migration:

| state     | event                                   | action                                        | next      |
|-----------|-----------------------------------------|-----------------------------------------------|-----------|
| RUNNING   | commit point reached by cand w          | claim(w), ROLLBACK every other live cand      | RUNNING*  |
|           |   (phase 2: w is ACKED, so it is also   |   (claim(w), COMMIT, then the ROLLBACKs: the  |           |
|           |   the row below, in one step)           |   winner's request goes out first)            |           |
| RUNNING   | start                                   | standby async (before any marker), START      | RUNNING   |
| RUNNING*  | winner ACKED                            | COMMIT(gen+1)                                 | COMMITTED |
| RUNNING   | every cand FAILED / deadline / cancel   | ROLLBACK all, release buffer                  | ABORTED   |
| COMMITTED | ROLE_STATUS(SLAVE)                      | ask EQUAL (standby)                           | SWITCHED  |
| COMMITTED | winner gone / no ROLE_STATUS in time    | MASTER gen+2 (fences the winner's gen+1)      | RETAKING  |
| COMM/SW   | END_MIGRATION from winner               | note the end (standby and buffer stay)        | same      |
| COMM/SW   | DRAINED from winner                     | drop buffer and state, ask SLAVE, async back   | DONE      |
| SWITCHED  | winner gone                             | MASTER gen+2 (fenced)                         | RETAKING  |
| SWITCHED  | no DRAINED in time (winner alive)       | END_QUERY to the winner (again every 1 s)     | SWITCHED  |
| COMMITTED | REFUSE from the winner                  | MASTER gen+2 (fenced)                         | RETAKING  |
| SWITCHED  | REFUSE from the winner                  | MASTER gen+2 (fenced)                         | RETAKING  |
| RETAKING  | role MASTER confirmed                   | claim for itself, release buffer, async back  | RETAKEN   |
| RETAKING  | winner gone / REFUSE (again)            | nothing                                       | RETAKING  |
| RETAKING  | END_MIGRATION / DRAINED from the winner | nothing (the retake stands)                   | RETAKING  |
| RUNNING   | (ABORTED, above)                        | also claim for itself (a late rescue loses)   | ABORTED   |
| any       | message from a loser / unknown peer     | ignore                                        | same      |
(RUNNING* is RUNNING with a winner chosen; COMM/SW is COMMITTED or SWITCHED.)

Candidate:

| state    | event                                     | action                                   | next     |
|----------|-------------------------------------------|------------------------------------------|----------|
| JOINING  | role EQUAL confirmed (gen)                | STATUS(EQUAL, gen, synthetic)            | EQUAL    |
| EQUAL    | own marker seen                           | buffer from now on                       | EQUAL+m  |
| EQUAL    | STATE                                     | restore (drop old copy first)            | EQUAL+s  |
| EQUAL    | restored(digest ok) and marker seen       | STATE_ACK(digest)                        | READY    |
| READY    | COMMIT(gen)                               | MASTER with gen, fenced                  | TAKING   |
| TAKING   | MASTER confirmed                          | END_MIGRATION (not a rescuer), release gap + buffer | FLUSHING |
| TAKING   | MASTER refused (stale: fenced)            | SLAVE, drop buffer and state             | OUT      |
| TAKING+  | demoted (ROLE_STATUS SLAVE)               | SLAVE, drop buffer and state             | OUT      |
| TAKING+  | refused / demoted, initiator gone         | claim (its retake never finished)        | CLAIMING |
| FLUSHING | app answered                              | DRAINED                                  | MASTER   |
| MASTER   | END_QUERY                                 | DRAINED (again)                          | MASTER   |
| <TAKING  | ROLLBACK / deadline / abandon             | SLAVE, drop buffer and state             | OUT      |
| <TAKING  | initiator gone                            | claim (at once with state, else after a grace) | CLAIMING |
| TAKING+  | initiator gone                            | remember it                              | same     |
| CLAIMING | claim won                                 | MASTER (normal request)                  | TAKING   |
| CLAIMING | claim lost                                | SLAVE, drop buffer and state             | OUT      |
| any      | message for another migration             | ignore                                   | same     |
| (none)   | COMMIT (not a candidate now)              | REFUSE (answer_stray)                    | -        |
| (none)   | END_QUERY (winner done lingering)         | DRAINED if MASTER, else REFUSE           | -        |
(TAKING+ is TAKING, FLUSHING or MASTER; a rescuer does not claim twice. "Demoted" in MASTER
means the initiator retook the switch after the winner finished: its copy of the state goes.)

Why END_MIGRATION comes before the buffer is answered: the issue's (and the paper's) sequence is
MASTER, End_Migration, then the buffered requests, and the migration time ends at End_Migration;
the drain is recorded separately (`drain_ms`), since it is part of the switch's blackout. Why the
initiator never guesses DRAINED: a winner slow to flush (a stalled process) that dies after the
guess would take its buffer with it. The standby and the buffer stay until DRAINED or the winner
is gone; END_QUERY recovers a lost DRAINED (a lost END_MIGRATION only loses the mark: DRAINED
ends the migration as well). Why it claims for itself on every outcome other than committed: a
candidate whose ROLLBACK was lost must not rescue a migration that ended.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ryu_apps.erc import wire
from ryu_apps.roles.core import GEN_MASK, Role

#: Candidates without state wait this long after the initiator vanished before claiming the
#: switch, so that one with the state (which claims at once) wins the claim.
RESCUE_GRACE_S = 0.3
#: How long the initiator waits for ROLE_STATUS after COMMIT before fencing the winner out.
COMMIT_TIMEOUT_S = 2.0
#: After the SWITCHED deadline, the initiator asks the winner for DRAINED this often.
QUERY_EVERY_S = 1.0
#: How long a winner that finished keeps listening for a demotion (well past COMMIT_TIMEOUT_S).
LINGER_S = 10.0


# -- actions ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Send:
    to: str
    type: str
    body: Dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""


@dataclass(frozen=True)
class RequestRole:
    role: Role
    generation_id: Optional[int] = None  # None: learn it from the switch first
    fenced: bool = False                  # True: exactly this gen, no retry if refused as stale


@dataclass(frozen=True)
class PlaceMarker:
    """Add and delete a dummy flow whose FLOW_REMOVED carries this tag (initiator only)."""

    tag: int


@dataclass(frozen=True)
class TakeSnapshot:
    """Quiesce the apps (answer everything before F), then dump this switch's state."""


@dataclass(frozen=True)
class PublishSnapshot:
    """Shared transfer: put the snapshot once in the bus's exchange store."""


@dataclass(frozen=True)
class Restore:
    """Candidate: replace this switch's state with the snapshot (bytes, or the published key)."""

    snapshot: bytes
    key: str
    digest: str
    gap: bytes


@dataclass(frozen=True)
class Release:
    """Hand these buffered packet-ins (and PORT_STATUS) to the apps, in order (then report flushed)."""

    msgs: Tuple[Any, ...]
    then_flushed: bool = False


@dataclass(frozen=True)
class DropBuffer:
    count: int
    why: str


@dataclass(frozen=True)
class DropState:
    """Delete this switch's state from the instance's own Redis."""


@dataclass(frozen=True)
class Standby:
    """Initiator: receive packet-ins even as SLAVE (True) or stop (False)."""

    on: bool


@dataclass(frozen=True)
class Claim:
    """Atomically claim the switch on the bus (SET NX); the adapter calls `claim_result`.
    `force`: the initiator overwrites whatever the key holds (the migration is over)."""

    who: str
    force: bool = False


@dataclass(frozen=True)
class Finished:
    outcome: str
    reason: str = ""


@dataclass(frozen=True)
class Note:
    """Worth a log line (e.g. a synthetic Controller_Status)."""

    text: str


Action = Any


class MigrationError(Exception):
    """A request the initiator refuses before anything changes."""


# -- initiator --------------------------------------------------------------------------------------
class Cand(enum.Enum):
    INVITED = "invited"
    EQUAL = "equal"        # phase 1 done (STATUS received)
    MARKED = "marked"      # its marker seen in our stream, state not sent yet
    SENT = "sent"          # STATE sent
    ACKED = "acked"        # phase 2 done
    WINNER = "winner"
    FAILED = "failed"
    LOSER = "loser"


class Mig(enum.Enum):
    RUNNING = "running"
    COMMITTED = "committed"
    SWITCHED = "switched"
    RETAKING = "retaking"
    DONE = "done"
    ABORTED = "aborted"
    RETAKEN = "retaken"


FINAL = (Mig.DONE, Mig.ABORTED, Mig.RETAKEN)


@dataclass
class CandTrack:
    id: str
    index: int
    state: Cand = Cand.INVITED
    t: Dict[str, float] = field(default_factory=dict)
    gap_len: int = 0
    result: str = ""
    gen: Optional[int] = None
    restore_ms: Optional[float] = None  # as the candidate measured it (STATE in -> restored)
    phase3_ms: Optional[Dict[str, float]] = None  # the winner's own marks, from its COMMIT


@dataclass
class InitiatorCore:
    mig: str
    dpid: int
    me: str
    candidates: List[str]
    commit: str = "phase2"
    transfer: str = "copy"
    timeout: float = 10.0
    candidate_timeout: float = 5.0
    tag_base: int = 0
    state: Mig = Mig.RUNNING
    generation_id: int = 0
    winner: Optional[str] = None
    commit_gen: int = 0
    buffered: int = 0
    buffer: List[Any] = field(default_factory=list)
    frozen: bool = False
    snapshot: Optional[bytes] = None
    digest: str = ""
    t: Dict[str, float] = field(default_factory=dict)
    outcome: str = ""
    reason: str = ""
    _deadline: float = float("inf")  # set by start(); a tick before it must not abort
    _commit_deadline: float = float("inf")

    def __post_init__(self) -> None:
        if not self.candidates:
            raise MigrationError("no candidate given")
        if len(set(self.candidates)) != len(self.candidates):
            raise MigrationError("a candidate is named twice")
        if self.me in self.candidates:
            raise MigrationError(f"{self.me} is the current master: it cannot be a candidate")
        if self.commit not in wire.COMMIT_POINTS:
            raise MigrationError(f"committing point must be one of {', '.join(wire.COMMIT_POINTS)}")
        if self.transfer not in wire.TRANSFERS:
            raise MigrationError(f"transfer must be one of {', '.join(wire.TRANSFERS)}")
        self.cands: Dict[str, CandTrack] = {
            c: CandTrack(c, i) for i, c in enumerate(self.candidates)}
        self.by_tag: Dict[int, str] = {self.tag_base + i: c for i, c in enumerate(self.candidates)}

    # -- events -----------------------------------------------------------------------------------
    def start(self, now: float, generation_id: int) -> List[Action]:
        self.generation_id = generation_id & GEN_MASK
        self.t["start"] = now
        self._deadline = now + self.timeout
        body = {"commit": self.commit, "transfer": self.transfer, "deadline_s": self.candidate_timeout,
                "initiator": self.me, "candidates": self.candidates}
        # Standby first: the switch applies it before the marker that follows on the same
        # connection, and COMMIT needs that marker, so it is in force before we can be demoted.
        out: List[Action] = [Standby(True)]
        for c in self.cands.values():
            c.t["start"] = now
            out.append(Send(c.id, wire.START, dict(body, index=c.index, tag=self.tag_base + c.index)))
        return out

    def on_peer(self, now: float, msg: wire.Msg) -> List[Action]:
        c = self.cands.get(msg.src)
        if msg.mig != self.mig or c is None or self.state in FINAL:
            return []
        if c.state in (Cand.FAILED, Cand.LOSER):
            return []  # a loser's late word: ignored, it has been told to roll back
        if msg.type == wire.STATUS:
            return self._on_status(now, c, msg)
        if msg.type == wire.REFUSE:
            why = "refused: " + str(msg.body.get("reason", ""))
            if self.state is not Mig.RUNNING:
                if c.id == self.winner and self.state in (Mig.COMMITTED, Mig.SWITCHED):
                    return self._retake(now, f"winner {c.id} {why}")
                return []
            return self._fail(now, c, why)
        if msg.type == wire.STATE_ACK:
            return self._on_ack(now, c, msg)
        if msg.type in (wire.END_MIGRATION, wire.DRAINED):
            return self._on_end(now, c, msg)
        return []

    def marker_seen(self, now: float, tag: int) -> List[Action]:
        """Our own stream reached the marker with this tag (called in stream order)."""
        name = self.by_tag.get(tag)
        if name is None or self.state in FINAL:
            return []
        c = self.cands[name]
        out: List[Action] = []
        if not self.frozen:
            self.frozen = True
            self.t["freeze"] = now
            out.append(TakeSnapshot())
        c.gap_len = len(self.buffer)
        c.t["marker"] = now
        if c.state is Cand.EQUAL:
            c.state = Cand.MARKED
            out += self._send_state(now, c)
        return out

    def packet_in(self, now: float, msg: Any) -> bool:
        """True: buffered here (from the freeze point on, until the migration ends)."""
        if not self.frozen or self.state in FINAL:
            return False
        self.buffer.append(msg)
        self.buffered += 1
        return True

    def snapshot_ready(self, now: float, snapshot: bytes, digest: str) -> List[Action]:
        if self.state in FINAL or self.snapshot is not None:
            return []
        self.snapshot, self.digest = snapshot, digest
        self.t["snapshot"] = now
        out: List[Action] = []
        if self.transfer == "shared":
            out.append(PublishSnapshot())
        for c in self.cands.values():
            if c.state is Cand.MARKED:
                out += self._send_state(now, c)
        return out

    def role_status(self, now: float, role: Role, generation_id: int) -> List[Action]:
        """The switch demoted us: the winner's MASTER request took effect."""
        self.generation_id = generation_id & GEN_MASK
        if self.state is Mig.COMMITTED and role == Role.SLAVE:
            self.state = Mig.SWITCHED
            self.t["switched"] = now
            self._deadline = now + self.timeout
            return [RequestRole(Role.EQUAL)]
        return []

    def role_confirmed(self, now: float, role: Role, generation_id: int) -> List[Action]:
        self.generation_id = generation_id & GEN_MASK
        if self.state is Mig.RETAKING and role == Role.MASTER:
            return self._finish(now, Mig.RETAKEN, "retaken", self.reason,
                                [Claim(self.me, force=True), Standby(False), *self._release()])
        return []

    def role_refused(self, now: float) -> List[Action]:
        """A fenced MASTER request of ours was stale: learn the generation and try once more."""
        if self.state is Mig.RETAKING:
            return [RequestRole(Role.MASTER)]
        return []

    def peer_gone(self, now: float, who: str) -> List[Action]:
        c = self.cands.get(who)
        if c is None or self.state in FINAL:
            return []
        if who == self.winner and self.state is not Mig.RUNNING:
            if self.state in (Mig.COMMITTED, Mig.SWITCHED):
                return self._retake(now, f"winner {who} vanished")
            return []  # already retaking
        if c.state in (Cand.FAILED, Cand.LOSER):
            return []
        return self._fail(now, c, "vanished")

    def cancel(self, now: float) -> List[Action]:
        if self.state is not Mig.RUNNING:
            raise MigrationError(f"migration {self.mig} is {self.state.value}: too late to cancel")
        return self._abort(now, "cancelled", "cancelled by the operator")

    def tick(self, now: float) -> List[Action]:
        if self.state is Mig.RUNNING and now >= self._deadline:
            return self._abort(now, "aborted", "timed out before the committing point"
                               if self.winner is None else f"winner {self.winner} timed out")
        if self.state is Mig.COMMITTED and now >= self._commit_deadline:
            return self._retake(now, f"no ROLE_STATUS {COMMIT_TIMEOUT_S:.1f} s after COMMIT")
        if self.state is Mig.SWITCHED and now >= self._deadline:
            self._deadline = now + QUERY_EVERY_S
            out: List[Action] = [Send(self.winner, wire.END_QUERY, {})]
            if "query" not in self.t:
                self.t["query"] = now
                out.append(Note(f"no DRAINED from {self.winner} yet: asking"))
            return out
        return []

    def watched(self) -> List[str]:
        """Peers whose liveness matters now."""
        if self.state in FINAL or self.state is Mig.RETAKING:
            return []
        if self.state is not Mig.RUNNING:
            return [self.winner] if self.winner else []
        return [c.id for c in self.cands.values()
                if c.state not in (Cand.FAILED, Cand.LOSER)]

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    # -- internals --------------------------------------------------------------------------------
    def _on_status(self, now: float, c: CandTrack, msg: wire.Msg) -> List[Action]:
        if c.state is not Cand.INVITED or msg.body.get("role") != "EQUAL":
            return []
        c.state, c.t["status"] = Cand.EQUAL, now
        c.gen = msg.body.get("gen")
        out: List[Action] = [Note(f"{c.id} is EQUAL on {self.dpid:#x} (gen {c.gen}; "
                                  f"{'synthetic' if msg.body.get('synthetic') else 'switch'} "
                                  "Controller_Status)")]
        if self.commit == "phase1" and self.winner is None:
            claim, rollbacks = self._decide(now, c)
            out += claim + rollbacks
        if self.winner is None or self.winner == c.id:
            out.append(PlaceMarker(self.tag_base + c.index))
        return out

    def _send_state(self, now: float, c: CandTrack) -> List[Action]:
        if self.snapshot is None or c.state is not Cand.MARKED:
            return []
        c.state, c.t["state_sent"] = Cand.SENT, now
        gap = tuple(self.buffer[:c.gap_len])
        body = {"digest": self.digest, "size": len(self.snapshot), "gap": len(gap)}
        if self.transfer == "shared":
            body["key"] = wire.xfer_key(self.mig)
            return [Send(c.id, wire.STATE, body, _gap_bytes(gap))]
        body["snapshot_len"] = len(self.snapshot)
        return [Send(c.id, wire.STATE, body, self.snapshot + _gap_bytes(gap))]

    def _on_ack(self, now: float, c: CandTrack, msg: wire.Msg) -> List[Action]:
        if c.state is not Cand.SENT:
            return []
        if msg.body.get("digest") != self.digest:
            return self._fail(now, c, "state digest mismatch")
        c.state, c.t["ack"] = Cand.ACKED, now
        restore_ms = msg.body.get("restore_ms")
        if isinstance(restore_ms, (int, float)) and not isinstance(restore_ms, bool):
            c.restore_ms = float(restore_ms)
        if self.winner is None:  # phase-2 commit: COMMIT goes out before the losers' ROLLBACKs
            claim, rollbacks = self._decide(now, c)
            return claim + self._commit(now, c) + rollbacks
        return self._commit(now, c) if self.winner == c.id else []

    def _decide(self, now: float, w: CandTrack) -> Tuple[List[Action], List[Action]]:
        """The committing point: w wins (claimed first), every other live candidate is rolled back."""
        self.winner = w.id
        self.t["decide"] = now
        rollbacks: List[Action] = []
        for c in self.cands.values():
            if c is not w and c.state not in (Cand.FAILED, Cand.LOSER):
                c.state, c.result = Cand.LOSER, "lost the race"
                rollbacks.append(Send(c.id, wire.ROLLBACK, {"reason": f"{w.id} won"}))
        return [Claim(w.id)], rollbacks

    def _commit(self, now: float, w: CandTrack) -> List[Action]:
        w.state = Cand.WINNER
        self.state = Mig.COMMITTED
        self.t["commit"] = now
        self._commit_deadline = now + COMMIT_TIMEOUT_S
        self.commit_gen = (self.generation_id + 1) & GEN_MASK
        return [Send(w.id, wire.COMMIT, {"gen": self.commit_gen})]

    def _on_end(self, now: float, c: CandTrack, msg: wire.Msg) -> List[Action]:
        """END_MIGRATION: the migration's end (timing only). DRAINED: the winner answered its
        buffer, so the standby and our copy of the buffer can go."""
        if c.id != self.winner or self.state not in (Mig.COMMITTED, Mig.SWITCHED):
            return []
        marks = msg.body.get("marks_ms")
        if isinstance(marks, dict):
            c.phase3_ms = dict(c.phase3_ms or {}, **{
                str(k): float(v) for k, v in marks.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)})
        if msg.type == wire.END_MIGRATION:
            self.t.setdefault("end", now)
            return []
        self.t["drained"] = now
        return self._finish_committed(now, "")

    def _finish_committed(self, now: float, reason: str) -> List[Action]:
        n = len(self.buffer)
        self.buffer.clear()
        self.cands[self.winner].result = "won"
        return self._finish(now, Mig.DONE, "committed", reason,
                            [DropBuffer(n, f"{self.winner} answers them"), DropState(),
                             RequestRole(Role.SLAVE), Standby(False)])

    def _fail(self, now: float, c: CandTrack, why: str) -> List[Action]:
        c.state, c.result = Cand.FAILED, why
        out: List[Action] = [Send(c.id, wire.ROLLBACK, {"reason": why})]
        if c.id == self.winner:
            return out + self._abort(now, "aborted", f"winner {c.id} {why}")
        if all(x.state in (Cand.FAILED, Cand.LOSER) for x in self.cands.values()):
            return out + self._abort(now, "aborted", "no candidate left: " + "; ".join(
                f"{x.id} {x.result}" for x in self.cands.values()))
        return out

    def _abort(self, now: float, outcome: str, reason: str) -> List[Action]:
        out: List[Action] = []
        for c in self.cands.values():
            if c.state not in (Cand.FAILED, Cand.LOSER):
                c.state, c.result = Cand.FAILED, c.result or reason
                out.append(Send(c.id, wire.ROLLBACK, {"reason": reason}))
        return self._finish(now, Mig.ABORTED, outcome, reason, [Claim(self.me, force=True)]
                            + out + self._release() + [Standby(False)])

    def _retake(self, now: float, reason: str) -> List[Action]:
        """Become MASTER again with a generation_id above the one the winner was given."""
        self.state, self.reason = Mig.RETAKING, reason
        self.t["retake"] = now
        if self.winner:
            self.cands[self.winner].result = "won, then " + reason
        # The winner was told commit_gen: one above it makes the winner's request stale if it
        # has not reached the switch yet, and outranks it if it has.
        return [RequestRole(Role.MASTER, (self.commit_gen + 1) & GEN_MASK, fenced=True)]

    def _release(self) -> List[Action]:
        msgs = tuple(self.buffer)
        self.buffer.clear()
        return [Release(msgs)] if msgs else []

    def _finish(self, now: float, state: Mig, outcome: str, reason: str,
                out: List[Action]) -> List[Action]:
        self.state, self.outcome, self.reason = state, outcome, reason
        self.t["finish"] = now
        return out + [Finished(outcome, reason)]

    # -- the record -------------------------------------------------------------------------------
    def record(self) -> Dict[str, Any]:
        ms = lambda a, b: None if a is None or b is None else round((b - a) * 1000, 3)  # noqa: E731
        t0 = self.t.get("start")
        phases = None
        if self.winner:
            w = self.cands[self.winner].t
            end = self.t.get("end") or self.t.get("finish")  # END lost: DRAINED ends it
            phases = {"phase1": ms(w.get("start"), w.get("status")),
                      "phase2": ms(w.get("status"), w.get("ack")),
                      "phase3": ms(w.get("ack"), end) if self.outcome == "committed" else None}
        return {
            "mig": self.mig, "dpid": self.dpid, "initiator": self.me,
            "mode": "fixed" if len(self.candidates) == 1 else "meta", "commit": self.commit,
            "transfer": self.transfer, "candidates": list(self.candidates),
            "winner": self.winner if self.outcome == "committed" else None,
            "outcome": self.outcome or self.state.value, "reason": self.reason,
            "total_ms": ms(t0, self.t.get("end") if self.outcome == "committed"
                           and "end" in self.t else self.t.get("finish")),
            "drain_ms": ms(self.t.get("end"), self.t.get("drained")), "phases_ms": phases,
            "detail": {c.id: {"state": c.state.value, "phase1_ms": ms(c.t.get("start"), c.t.get("status")),
                              "phase2_ms": ms(c.t.get("status"), c.t.get("ack")),
                              "restore_ms": c.restore_ms, "phase3_marks_ms": c.phase3_ms,
                              "marks_ms": {k: ms(t0, v) for k, v in c.t.items()},
                              "result": c.result} for c in self.cands.values()},
            "marks_ms": {k: ms(t0, v) for k, v in self.t.items()},
            "state_bytes": len(self.snapshot or b""), "gap": max(
                (c.gap_len for c in self.cands.values()), default=0), "buffered": self.buffered,
        }


def _gap_bytes(msgs: Tuple[Any, ...]) -> bytes:
    """Packet-ins as their raw OpenFlow bytes, length-prefixed (the adapter re-parses them)."""
    out = bytearray()
    for m in msgs:
        raw = bytes(getattr(m, "buf", m))
        out += len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def split_gap(data: bytes) -> List[bytes]:
    out, i = [], 0
    while i < len(data):
        if i + 4 > len(data):
            raise wire.WireError("truncated gap")
        n = int.from_bytes(data[i:i + 4], "big")
        if i + 4 + n > len(data):
            raise wire.WireError("truncated gap")
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out


# -- candidate --------------------------------------------------------------------------------------
def answer_stray(msg: wire.Msg, master: bool) -> Optional[Send]:
    """The answer of an instance with no candidacy (any more) for msg's migration, if it owes one.

    A COMMIT left unanswered would make the initiator wait for a ROLE_STATUS that never comes. An
    END_QUERY reaches a winner that stopped lingering: if it is still MASTER it answered its whole
    buffer before it finished, so DRAINED is true; if not, the initiator must retake."""
    if msg.type == wire.COMMIT:
        return Send(msg.src, wire.REFUSE, {"reason": "not a candidate"})
    if msg.type == wire.END_QUERY:
        if master:
            return Send(msg.src, wire.DRAINED, {"again": True})
        return Send(msg.src, wire.REFUSE, {"reason": "not master"})
    return None


class Step(enum.Enum):
    JOINING = "joining"
    EQUAL = "equal"
    READY = "ready"
    TAKING = "taking"
    FLUSHING = "flushing"
    CLAIMING = "claiming"
    MASTER = "master"
    OUT = "out"


@dataclass
class CandidateCore:
    mig: str
    dpid: int
    me: str
    initiator: str
    tag: int
    deadline: float
    step: Step = Step.JOINING
    marked: bool = False
    restored: bool = False
    digest: str = ""
    gap: Tuple[Any, ...] = ()
    buffer: List[Any] = field(default_factory=list)
    initiator_gone_at: Optional[float] = None
    rescue: bool = False
    outcome: str = ""
    finished_at: Optional[float] = None
    state_at: Optional[float] = None
    restore_ms: Optional[float] = None
    t: Dict[str, float] = field(default_factory=dict)  # own timing marks of phase 3

    @classmethod
    def from_start(cls, now: float, me: str, msg: wire.Msg) -> Tuple["CandidateCore", List[Action]]:
        b = msg.body
        if not isinstance(b.get("tag"), int) or not isinstance(b.get("deadline_s"), (int, float)):
            raise wire.WireError("START without tag or deadline_s")
        core = cls(msg.mig, msg.dpid, me, msg.src, b["tag"], now + float(b["deadline_s"]))
        return core, [RequestRole(Role.EQUAL)]

    @property
    def live(self) -> bool:
        return self.step not in (Step.MASTER, Step.OUT)

    def lingering(self, now: float) -> bool:
        """A winner that finished may still be demoted by the initiator's retake (COMMIT timeout)
        for a while: it keeps listening (role changes, END_QUERY, the initiator's liveness)."""
        return (self.step is Step.MASTER and not self.rescue and self.finished_at is not None
                and now < self.finished_at + LINGER_S)

    def role_confirmed(self, now: float, role: Role, generation_id: int) -> List[Action]:
        if self.step is Step.JOINING and role == Role.EQUAL:
            self.step = Step.EQUAL
            return [Send(self.initiator, wire.STATUS,
                         {"role": "EQUAL", "gen": generation_id, "synthetic": True}),
                    Note(f"synthetic Controller_Status: {self.me} is EQUAL on {self.dpid:#x} "
                         f"(gen {generation_id}), relayed to {self.initiator}")]
        if self.step is Step.TAKING and role == Role.MASTER:
            self.step, self.t["master"] = Step.FLUSHING, now
            msgs = tuple(self.gap) + tuple(self.buffer)
            self.gap, self.buffer = (), []
            out: List[Action] = []
            if not self.rescue:  # a rescuer has nobody to tell
                out.append(Send(self.initiator, wire.END_MIGRATION, {"marks_ms": self._marks(now)}))
            return out + [Release(msgs, then_flushed=True)]
        return []

    def role_refused(self, now: float) -> List[Action]:
        if self.step is Step.TAKING:
            if self._orphaned():
                return self._reclaim("its MASTER request was refused")
            return self._out("refused MASTER (fenced by the initiator)")
        return []

    def role_status(self, now: float, role: Role, generation_id: int) -> List[Action]:
        """Demoted while taking over or after: the initiator fenced us out (its retake)."""
        if role != Role.SLAVE or self.step not in (Step.TAKING, Step.FLUSHING, Step.MASTER):
            return []
        if self._orphaned():
            return self._reclaim("demoted")
        if self.step is Step.MASTER:
            self.step, self.outcome = Step.OUT, "won, then demoted"
            return [Note(f"{self.me} demoted on {self.dpid:#x} after winning {self.mig} (the "
                         f"initiator retook it): dropping its state"),
                    RequestRole(Role.SLAVE), DropState()]
        return self._out("demoted by the initiator")

    def marker_seen(self, now: float, tag: int) -> List[Action]:
        if tag != self.tag or not self.live or self.marked:
            return []
        self.marked = True
        return self._maybe_ack()

    def packet_in(self, now: float, msg: Any) -> bool:
        """True: buffered for whoever wins (from our marker on, while the migration is live)."""
        if not self.marked or self.step in (Step.MASTER, Step.OUT, Step.FLUSHING):
            return False
        self.buffer.append(msg)
        return True

    def on_peer(self, now: float, msg: wire.Msg) -> List[Action]:
        if msg.mig != self.mig or msg.src != self.initiator:
            return []
        if msg.type == wire.END_QUERY:
            if self.step is Step.MASTER and not self.rescue:
                return [Send(self.initiator, wire.DRAINED, {"again": True})]
            return []  # flushing: DRAINED follows; otherwise not the winner (any more)
        if not self.live:
            return []
        if msg.type == wire.STATE and self.step in (Step.EQUAL, Step.JOINING) and not self.restored:
            b = msg.body
            if b.get("key"):
                snap, gap = b"", msg.payload
            else:
                n = b.get("snapshot_len")
                if not isinstance(n, int) or not 0 <= n <= len(msg.payload):
                    return self._out("malformed STATE") + [
                        Send(self.initiator, wire.REFUSE, {"reason": "malformed STATE"})]
                snap, gap = msg.payload[:n], msg.payload[n:]
            self.state_at = now
            return [Restore(snap, str(b.get("key") or ""), str(b.get("digest", "")), gap)]
        if msg.type == wire.COMMIT and self.step is Step.READY:
            gen = msg.body.get("gen")
            if not isinstance(gen, int):
                return []
            self.step, self.t["commit"] = Step.TAKING, now
            return [RequestRole(Role.MASTER, gen & GEN_MASK, fenced=True)]
        if msg.type == wire.ROLLBACK and self.step not in (Step.TAKING, Step.FLUSHING):
            return self._out("rolled back: " + str(msg.body.get("reason", "")))
        return []

    def restored_state(self, now: float, digest: str, gap: Tuple[Any, ...]) -> List[Action]:
        if not self.live or self.restored:
            return []
        self.restored, self.digest, self.gap = True, digest, gap
        if self.state_at is not None:
            self.restore_ms = round((now - self.state_at) * 1000, 3)
        return self._maybe_ack()

    def flushed(self, now: float) -> List[Action]:
        if self.step is not Step.FLUSHING:
            return []
        self.step, self.finished_at = Step.MASTER, now
        self.outcome = "rescued" if self.rescue else "won"
        out: List[Action] = []
        if not self.rescue:
            out.append(Send(self.initiator, wire.DRAINED, {"marks_ms": self._marks(now, "flushed")}))
        return out + [Finished(self.outcome)]

    def _marks(self, now: float, last: str = "") -> Dict[str, float]:
        """Phase 3 as the winner saw it, in ms from COMMIT (for the initiator's record)."""
        t0 = self.t.get("commit", now)
        marks = {k: round((v - t0) * 1000, 3) for k, v in self.t.items()}
        if last:
            marks[last] = round((now - t0) * 1000, 3)
        return marks

    def initiator_gone(self, now: float) -> List[Action]:
        if self.initiator_gone_at is not None:
            return []
        if self.step in (Step.JOINING, Step.EQUAL, Step.READY):
            self.initiator_gone_at = now
            return self.tick(now)
        if self.step in (Step.TAKING, Step.FLUSHING, Step.MASTER) and not self.rescue:
            self.initiator_gone_at = now  # a refusal or demotion from now on: its unfinished retake
        return []

    def claim_result(self, now: float, won: bool) -> List[Action]:
        if self.step is not Step.CLAIMING:
            return []
        if not won:
            return self._out("another candidate took the switch over")
        self.step, self.rescue = Step.TAKING, True
        return [Note(f"{self.me} takes {self.dpid:#x} over: its initiator vanished"),
                RequestRole(Role.MASTER)]

    def tick(self, now: float) -> List[Action]:
        if self.initiator_gone_at is not None and self.step in (Step.JOINING, Step.EQUAL, Step.READY):
            ready = self.step is Step.READY
            if ready or now >= self.initiator_gone_at + RESCUE_GRACE_S:
                self.step = Step.CLAIMING
                return [Claim(self.me)]
            return []
        if self.step in (Step.JOINING, Step.EQUAL, Step.READY) and now >= self.deadline:
            why = "deadline passed without COMMIT"
            return [Send(self.initiator, wire.REFUSE, {"reason": why})] + self._out(why)
        return []

    def abandon(self, now: float, why: str) -> List[Action]:
        """The adapter could not carry out this migration's part (e.g. the restore failed)."""
        return self._out(why) if self.live else []

    def _orphaned(self) -> bool:
        return self.initiator_gone_at is not None and not self.rescue

    def _reclaim(self, why: str) -> List[Action]:
        """The initiator began retaking the switch, then died: nobody is MASTER. The claim holds
        this winner unless the retake finished (then the initiator claimed it for itself)."""
        self.step = Step.CLAIMING
        return [Note(f"{self.me}: {why} on {self.dpid:#x} after the initiator vanished: claiming"),
                Claim(self.me)]

    def _maybe_ack(self) -> List[Action]:
        if self.step is Step.EQUAL and self.marked and self.restored:
            self.step = Step.READY
            body: Dict[str, Any] = {"digest": self.digest}
            if self.restore_ms is not None:
                body["restore_ms"] = self.restore_ms
            return [Send(self.initiator, wire.STATE_ACK, body)]
        return []

    def _out(self, why: str) -> List[Action]:
        self.step, self.outcome = Step.OUT, why
        n = len(self.buffer) + len(self.gap)
        self.buffer, self.gap = [], ()
        return [RequestRole(Role.SLAVE), DropBuffer(n, why), DropState(), Finished("rolled back", why)]
