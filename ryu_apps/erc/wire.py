"""What controllers and operators say to each other over the bus, and the bus's key names. No I/O.

The bus is one Redis server shared by the controller instances of a deployment (not any
instance's own Redis): pub/sub carries the messages, a few keys hold what must outlive a message.
Each instance subscribes to its own channel `erc:<instance id>`; operators reply on a channel they
name in the request. A message is a JSON header line, a newline, then an optional binary payload
(the state snapshot in copy mode), so a megabyte of state is not base64-inflated. A message with a
payload goes to the instance's second channel, `ercdata:<instance id>`, so that a monitor of
`erc:*` (a dashboard, the experiment's glitch watcher) does not make the bus copy every snapshot to
it: with three candidates that was 3 MB more for the single-threaded bus to write during the
migration. Both channels are subscribed on one connection, and Redis writes what it delivers to a
connection in the order the publishes came, so the two do not reorder each other.

Bus keys:
    ctl:instances          hash  id -> JSON {id, host, of_port, channel, load, pid, ts}
                                 (each instance refreshes its own entry every second)
    ctl:master             hash  dpid (16 hex) -> id of the instance that is MASTER of it
    mig:lock:<dpid>        str   id of the migration in flight for the switch (SET NX, expires)
    mig:claim:<mig>        str   id of the instance that won the migration (SET NX): the commit
                                 decision, or a candidate's rescue claim when the initiator died
    mig:inflight           hash  mig id -> JSON record of a migration in flight
    mig:history            list  JSON records of finished migrations, newest first (capped)
    xfer:<mig>             str   the published snapshot (shared transfer mode; expires)
Instance-local keys (in the instance's own Redis):
    ctl:peers              hash  id -> JSON {id, host, of_port, endpoint, load, ts}, what zeroconf
                                 discovery currently sees (written by the instance's advertiser)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict

CHANNEL_PREFIX = "erc:"
DATA_CHANNEL_PREFIX = "ercdata:"
INSTANCES_KEY = "ctl:instances"
MASTER_KEY = "ctl:master"
INFLIGHT_KEY = "mig:inflight"
HISTORY_KEY = "mig:history"
HISTORY_CAP = 1000
PEERS_KEY = "ctl:peers"

# controller <-> controller (the ERC message set; see ryu_apps/erc/core.py)
START = "START"                 # initiator -> candidate: become EQUAL (phase 1)
STATUS = "STATUS"               # candidate -> initiator: relayed Controller_Status (EQUAL, gen)
REFUSE = "REFUSE"               # candidate -> initiator: cannot take part (reason)
STATE = "STATE"                 # initiator -> candidate: snapshot + gap packet-ins (phase 2)
STATE_ACK = "STATE_ACK"         # candidate -> initiator: state restored (digest)
COMMIT = "COMMIT"               # initiator -> winner: take MASTER with this generation_id
ROLLBACK = "ROLLBACK"           # initiator -> candidate: back to SLAVE, drop buffer and state
END_MIGRATION = "END_MIGRATION"  # winner -> initiator: MASTER now, migration over (the buffer next)
DRAINED = "DRAINED"             # winner -> initiator: buffer answered; the standby can go
END_QUERY = "END_QUERY"         # initiator -> winner: DRAINED is late; send it again if drained
PEER_TYPES = (START, STATUS, REFUSE, STATE, STATE_ACK, COMMIT, ROLLBACK, END_MIGRATION, DRAINED,
              END_QUERY)

# operator <-> controller
OP_MIGRATE = "OP_MIGRATE"       # body: dpid, to [ids], auto k, mode, commit, transfer, timeout_s
OP_CANCEL = "OP_CANCEL"         # body: dpid
OP_RESULT = "OP_RESULT"         # body: ok, error, record (sent to the request's reply channel)
OP_TYPES = (OP_MIGRATE, OP_CANCEL, OP_RESULT)

COMMIT_POINTS = ("phase1", "phase2")
MODES = ("meta", "fixed")
TRANSFERS = ("copy", "shared")


class WireError(ValueError):
    """A message on the bus is malformed (the peer's fault); it is logged and dropped."""


def channel(instance_id: str) -> str:
    return CHANNEL_PREFIX + instance_id


def data_channel(instance_id: str) -> str:
    """Where messages with a payload go (see the module docstring)."""
    return DATA_CHANNEL_PREFIX + instance_id


def channel_for(instance_id: str, payload: bytes) -> str:
    return data_channel(instance_id) if payload else channel(instance_id)


def lock_key(dpid: int) -> str:
    return f"mig:lock:{dpid:016x}"


def claim_key(mig: str) -> str:
    return f"mig:claim:{mig}"


def xfer_key(mig: str) -> str:
    return f"xfer:{mig}"


def dpid_text(dpid: int) -> str:
    return f"{dpid:016x}"


@dataclass(frozen=True)
class Msg:
    type: str
    mig: str
    dpid: int
    src: str
    body: Dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""
    seq: int = 0


def encode(msg: Msg) -> bytes:
    head = {"type": msg.type, "mig": msg.mig, "dpid": msg.dpid, "src": msg.src, "seq": msg.seq,
            "body": msg.body}
    return json.dumps(head, separators=(",", ":")).encode() + b"\n" + msg.payload


def decode(data: bytes) -> Msg:
    if isinstance(data, str):
        data = data.encode()
    head, sep, payload = bytes(data).partition(b"\n")
    try:
        h = json.loads(head)
    except ValueError as e:
        raise WireError(f"not a JSON header: {e}") from None
    if not isinstance(h, dict):
        raise WireError("header is not a JSON object")
    kind = h.get("type")
    if kind not in PEER_TYPES and kind not in OP_TYPES:
        raise WireError(f"unknown message type {kind!r}")
    for name, typ in (("mig", str), ("dpid", int), ("src", str), ("seq", int), ("body", dict)):
        if not isinstance(h.get(name), typ) or isinstance(h.get(name), bool):
            raise WireError(f"{kind}: field {name!r} missing or not {typ.__name__}")
    if not 0 <= h["dpid"] < 1 << 64:
        raise WireError(f"{kind}: dpid out of range")
    return Msg(kind, h["mig"], h["dpid"], h["src"], h["body"], payload if sep else b"", h["seq"])
