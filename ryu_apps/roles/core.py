"""Mastership of one switch connection, as this controller instance negotiates it. No I/O.

Open vSwitch makes every new connection EQUAL, so a controller that should be SLAVE must say so at
once, and one that should be MASTER must claim it with a generation_id the switch accepts (MASTER and
SLAVE requests older than the switch's current generation_id are refused as stale; EQUAL is never
checked). The current generation_id is learnt from the ROLE_REPLY to a NOCHANGE request.

Packet-ins are only ever answered by the confirmed MASTER. Those that arrive while the role is
still being negotiated are *held*: released in order if the switch confirms MASTER, discarded if it
confirms SLAVE/EQUAL (then another controller is master and answered them, if it was connected
when they were raised; with no master connected nobody answers them). This is safe as long as
at most one instance is configured as master of a switch; migrations (ERC) hand mastership over
with their own cut point instead of relying on this.

State table ("want" is the role this instance should hold; gen the last generation_id seen):

| state      | event                           | action                                    | next              |
|------------|---------------------------------|-------------------------------------------|-------------------|
| OFFLINE    | connected                       | ROLE_REQUEST(NOCHANGE)                    | QUERYING          |
| QUERYING   | reply to our query (gen)        | ROLE_REQUEST(want, gen+1 if MASTER else gen) | REQUESTING     |
| REQUESTING | reply to our request, role=want | release held (MASTER) / discard held      | SETTLED           |
| REQUESTING | reply to our request, other role| ROLE_REQUEST(NOCHANGE)                    | QUERYING          |
| REQUESTING | error STALE for our request     | ROLE_REQUEST(NOCHANGE)                    | QUERYING          |
| QUERYING / REQUESTING | deadline passed      | ROLE_REQUEST(NOCHANGE) (new xid)          | QUERYING          |
| SETTLED    | want(role) != role              | ROLE_REQUEST(role, gen+1 / gen)           | REQUESTING        |
| REQUESTING | want(role) != role requested    | ROLE_REQUEST(role, ...) (new xid)         | REQUESTING        |
| SETTLED / REQUESTING | want(role, gen, fenced)  | ROLE_REQUEST(role, exactly gen)           | REQUESTING        |
| REQUESTING | error STALE for a fenced request| Refused; want := role held                | SETTLED           |
| REQUESTING | deadline, fenced request        | the same request again (new xid)          | REQUESTING        |
| SETTLED    | ROLE_STATUS(SLAVE, gen)         | want := SLAVE (never fight a new master)  | SETTLED(SLAVE)    |
| any        | reply/error with an unknown xid | ignore (late answer to a retried request) | same              |
| any        | disconnected                    | discard held                              | OFFLINE           |

A *fenced* request (migrations: "take MASTER with exactly this generation_id") is never retried
with a fresher generation: being refused as stale is its answer, because another controller was
deliberately given a higher one.

Packet-ins: OFFLINE/QUERYING/REQUESTING hold (bounded; overflow discards the oldest, counted);
SETTLED(MASTER) admits; SETTLED(SLAVE/EQUAL) refuses. (OFFLINE holds because the platform may
deliver a packet-in before it announces the connection; the adapter drops released packet-ins
that belong to an older connection.)
"""
from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, List, Optional

GEN_MASK = (1 << 64) - 1
#: First xid of role requests: far above the platform's own counter so replies cannot be confused.
XID_BASE = 0xE0000000


class Role(enum.IntEnum):
    """OpenFlow controller roles; the same wire values in OF1.3, 1.4 and 1.5."""

    NOCHANGE = 0
    EQUAL = 1
    MASTER = 2
    SLAVE = 3


class State(enum.Enum):
    OFFLINE = "offline"
    QUERYING = "querying"
    REQUESTING = "requesting"
    SETTLED = "settled"


@dataclass(frozen=True)
class SendRoleRequest:
    role: Role
    generation_id: int
    xid: int
    fenced: bool = False


@dataclass(frozen=True)
class Release:
    """Held packet-ins to handle now, in arrival order (this instance became MASTER)."""

    msgs: tuple


@dataclass(frozen=True)
class Discard:
    """Held packet-ins another controller answers; count only."""

    count: int
    why: str


@dataclass(frozen=True)
class Settled:
    role: Role
    generation_id: int
    by_status: bool = False  # True: another controller changed our role (ROLE_STATUS)


@dataclass(frozen=True)
class Refused:
    """A fenced request was refused as stale; the role held is unchanged."""

    role: Role
    generation_id: int


Action = Any  # SendRoleRequest | Release | Discard | Settled


@dataclass
class RoleCore:
    """One switch connection. Methods take `now` (seconds) and return actions to carry out."""

    want: Role
    timeout: float = 3.0
    hold_limit: int = 4096
    state: State = State.OFFLINE
    role: Optional[Role] = None
    generation_id: Optional[int] = None
    held: Deque[Any] = field(default_factory=deque)
    overflowed: int = 0
    _xid: int = XID_BASE
    _pending: Optional[SendRoleRequest] = None
    _deadline: float = 0.0

    def __post_init__(self) -> None:
        if self.want not in (Role.MASTER, Role.SLAVE, Role.EQUAL):
            raise ValueError(f"cannot want role {self.want!r}")
        if self.hold_limit < 1:
            raise ValueError("hold_limit must be at least 1")

    # -- events from the switch -------------------------------------------------------------
    def connected(self, now: float) -> List[Action]:
        # Packet-ins held while OFFLINE came on this connection before the platform announced it.
        self.role = Role.EQUAL  # what OVS gives every new connection
        return [self._query(now)]

    def disconnected(self, now: float) -> List[Action]:
        out: List[Action] = []
        if self.held:
            out.append(Discard(len(self.held), "switch disconnected"))
            self.held.clear()
        self.state, self.role, self._pending = State.OFFLINE, None, None
        return out

    def role_reply(self, now: float, xid: int, role: Role, generation_id: int) -> List[Action]:
        pending = self._pending
        if pending is None or xid != pending.xid:
            return []
        self.generation_id = generation_id & GEN_MASK
        self.role = Role(role)
        if self.state is State.QUERYING:
            return [self._request(now, self.want)]
        if self.role == pending.role:
            return self._settle()
        return [self._query(now)]

    def role_error_stale(self, now: float, xid: int) -> List[Action]:
        pending = self._pending
        if pending is None or xid != pending.xid:
            return []
        if pending.fenced:
            self.want = self.role if self.role in (Role.MASTER, Role.SLAVE, Role.EQUAL) else Role.SLAVE
            self.state, self._pending = State.SETTLED, None
            return [Refused(pending.role, pending.generation_id)]
        return [self._query(now)]

    def role_status(self, now: float, role: Role, generation_id: int) -> List[Action]:
        """The switch tells us another controller changed our role (OVS: demoted by a new MASTER)."""
        self.generation_id = generation_id & GEN_MASK
        self.role = Role(role)
        if self.role == Role.SLAVE:
            self.want = Role.SLAVE
        if self.state is State.SETTLED:
            return [Settled(self.role, self.generation_id, by_status=True)]
        # A request of ours is in flight; its reply (or the retry) settles the role.
        return []

    def packet_in(self, now: float, msg: Any) -> bool:
        """True: handle it now. False: held for later, or another controller's to answer."""
        if self.state is State.SETTLED:
            return self.role == Role.MASTER
        if len(self.held) >= self.hold_limit:
            self.held.popleft()
            self.overflowed += 1
        self.held.append(msg)
        return False

    # -- events from this instance ----------------------------------------------------------
    def set_want(self, now: float, role: Role, generation_id: Optional[int] = None,
                 fenced: bool = False) -> List[Action]:
        """Ask for `role`; with `generation_id`, exactly that one (fenced: never retried)."""
        if role not in (Role.MASTER, Role.SLAVE, Role.EQUAL):
            raise ValueError(f"cannot want role {role!r}")
        if fenced and generation_id is None:
            raise ValueError("a fenced request needs a generation_id")
        self.want = role
        if generation_id is not None:
            if self.state not in (State.SETTLED, State.REQUESTING):
                raise ValueError(f"cannot ask for an exact generation while {self.state.value}")
            return [self._send(now, role, generation_id, fenced)]
        if self.state is State.SETTLED and self.role != role:
            return [self._request(now, role)]
        if self.state is State.REQUESTING and self._pending is not None \
                and self._pending.role != role:
            # Supersede the request in flight: the reply to its (old) xid is then ignored.
            return [self._request(now, role)]
        return []

    def tick(self, now: float) -> List[Action]:
        if self.state in (State.QUERYING, State.REQUESTING) and now >= self._deadline:
            p = self._pending
            if p is not None and p.fenced:
                # Same request again: the same generation_id is accepted twice, never a fresher one.
                return [self._send(now, p.role, p.generation_id, True)]
            return [self._query(now)]
        return []

    @property
    def is_master(self) -> bool:
        return self.state is State.SETTLED and self.role == Role.MASTER

    # -- internals ------------------------------------------------------------------------------
    def _send(self, now: float, role: Role, gen: int, fenced: bool = False) -> SendRoleRequest:
        self._xid = XID_BASE + ((self._xid - XID_BASE + 1) % 0x0FFFFFFF)
        self.state = State.REQUESTING if role != Role.NOCHANGE else State.QUERYING
        self._pending = SendRoleRequest(role, gen & GEN_MASK, self._xid, fenced)
        self._deadline = now + self.timeout
        return self._pending

    def _query(self, now: float) -> SendRoleRequest:
        self.state = State.QUERYING
        return self._send(now, Role.NOCHANGE, 0)

    def _request(self, now: float, role: Role) -> SendRoleRequest:
        self.state = State.REQUESTING
        gen = self.generation_id or 0
        if role == Role.MASTER:
            gen += 1
        return self._send(now, role, gen)

    def _settle(self) -> List[Action]:
        self.state, self._pending = State.SETTLED, None
        out: List[Action] = [Settled(self.role, self.generation_id or 0)]
        if self.held:
            msgs = tuple(self.held)
            self.held.clear()
            if self.role == Role.MASTER:
                out.append(Release(msgs))
            else:
                out.append(Discard(len(msgs), f"switch confirmed {self.role.name}"))
        return out
