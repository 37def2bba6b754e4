"""Operator requests over the bus (migrate, cancel) and what the bus records (status, history).

Shared by the command-line client and the HTTP API so both refuse the same bad requests with the
same one-line message. Every request is checked against what the bus knows (`ctl:master`,
`ctl:instances`, who listens on a channel) before anything is sent. A request is a `wire.Msg`
published on the initiator's channel; its one answer (OP_RESULT) comes back on a reply channel
private to the request, subscribed *before* the request is published so a fast answer is never
missed. Bus replies may be bytes or text (a client with or without decode_responses).
"""
from __future__ import annotations

import functools
import json
import logging
import math
import secrets
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, TypeVar

import redis

from ryu_apps.erc import wire
from sdnmig.errors import SdnmigError

LOG = logging.getLogger(__name__)
REPLY_PREFIX = "op:reply:"
OPERATOR = "op"
REPLY_GRACE_S = 5.0     # how long past the migration's own deadline we wait for its result
MAX_TIMEOUT_S = 3600.0
DEFAULT_HISTORY = 20

F = TypeVar("F", bound=Callable[..., Any])


class BusError(SdnmigError):
    """The bus is unreachable or holds damaged data: not the request's fault."""


class NoAnswer(SdnmigError):
    """The controller did not answer in time; what it was asked may still be running."""


def _on_bus(fn: F) -> F:
    """Turn redis-py errors into one-line BusErrors (no traceback for a bus that is down)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as e:
            raise BusError(f"bus: {e}") from None
    return wrapper  # type: ignore[return-value]


# -- input ----------------------------------------------------------------------------------------

def parse_dpid(value: Any) -> int:
    """A datapath id given as an int, or as text in decimal or 0x-hex."""
    if isinstance(value, int) and not isinstance(value, bool):
        dpid = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            dpid = int(text[2:], 16) if text.lower().startswith("0x") else int(text, 10)
        except ValueError:
            raise SdnmigError(f"switch {value!r} is not a datapath id: give it in decimal or "
                              "0x-hex") from None
    else:
        raise SdnmigError(f"switch {value!r} is not a datapath id: give it in decimal or 0x-hex")
    if not 0 <= dpid < 1 << 64:
        raise SdnmigError(f"switch {value!r} is out of range for a datapath id")
    return dpid


def _check_timeout(timeout: Any) -> float:
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT_S):
        raise SdnmigError(f"timeout {timeout!r} must be a number of seconds above 0 and at most "
                          f"{MAX_TIMEOUT_S:.0f}")
    return float(timeout)


def _check_id(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SdnmigError(f"{what}: {value!r} is not a controller id")
    return value.strip()


def _choice(value: Any, allowed: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise SdnmigError(f"{what} {value!r} is not one of {', '.join(allowed)}")
    return value


def migrate_body(to: Optional[Sequence[str]] = None, fixed: Optional[str] = None,
                 auto: Optional[int] = None, commit: str = "phase2", transfer: str = "copy",
                 timeout: float = 10.0, mode: Optional[str] = None) -> Dict[str, Any]:
    """The OP_MIGRATE body for these arguments (no reply channel yet); checks need no bus."""
    given = [n for n, v in (("to", to), ("fixed", fixed), ("auto", auto)) if v is not None]
    if len(given) != 1:
        raise SdnmigError("give exactly one of to (a list of controllers), fixed (one controller) "
                          f"or auto (a count); got {', '.join(given) or 'none'}")
    if to is not None:
        if isinstance(to, (str, bytes)) or not isinstance(to, (list, tuple)) or not to:
            raise SdnmigError("to must be a non-empty list of controller ids")
        targets = [_check_id(t, "to") for t in to]
        twice = sorted({t for t in targets if targets.count(t) > 1})
        if twice:
            raise SdnmigError(f"to names {', '.join(twice)} more than once")
    elif fixed is not None:
        targets = [_check_id(fixed, "fixed")]
    else:
        if isinstance(auto, bool) or not isinstance(auto, int) or auto < 1:
            raise SdnmigError(f"auto {auto!r} must be a whole number of candidates, at least 1")
        targets = []
    derived = "fixed" if fixed is not None else "meta"
    mode = _choice(derived if mode is None else mode, wire.MODES, "mode")
    if mode == "fixed" and len(targets) + (auto or 0) != 1:
        raise SdnmigError("mode fixed migrates toward exactly one controller")
    if mode == "meta" and fixed is not None:
        raise SdnmigError("mode meta contradicts fixed: use to for a meta-migration")
    return {"to": targets, "auto": auto, "mode": mode,
            "commit": _choice(commit, wire.COMMIT_POINTS, "commit"),
            "transfer": _choice(transfer, wire.TRANSFERS, "transfer"),
            "timeout_s": _check_timeout(timeout)}


# -- what the bus knows ---------------------------------------------------------------------------

def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _json_object(raw: Any, where: str) -> Dict[str, Any]:
    try:
        value = json.loads(raw)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise BusError(f"bus: {where} is not a JSON object (a controller wrote it damaged)")
    return value


def _master(bus: redis.Redis, dpid: int) -> str:
    master = bus.hget(wire.MASTER_KEY, wire.dpid_text(dpid))
    if master is None:
        raise SdnmigError(f"switch {dpid:#x} has no known MASTER (not in {wire.MASTER_KEY}): "
                          "is it connected to a running controller?")
    return _text(master)


def _instances(bus: redis.Redis) -> Dict[str, Dict[str, Any]]:
    raw = bus.hgetall(wire.INSTANCES_KEY)
    out = {}
    for key, value in raw.items():
        entry = _json_object(value, f"{wire.INSTANCES_KEY} entry {_text(key)!r}")
        out[_text(key)] = dict(entry, id=_text(key))
    return out


def _listeners(bus: redis.Redis, ids: Sequence[str]) -> Dict[str, int]:
    if not ids:
        return {}
    counts = bus.pubsub_numsub(*[wire.channel(i) for i in ids])
    return {_text(ch)[len(wire.CHANNEL_PREFIX):]: int(n) for ch, n in counts}


def _require_listening(bus: redis.Redis, initiator: str, dpid: int) -> None:
    if not _listeners(bus, [initiator]).get(initiator):
        raise SdnmigError(f"{initiator} (MASTER of switch {dpid:#x}) is not running: nobody "
                          f"listens on {wire.channel(initiator)}")


def _known_ids(bus: redis.Redis, ids: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    known = _instances(bus)
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise SdnmigError(f"unknown controller {', '.join(unknown)}: not in {wire.INSTANCES_KEY} "
                          f"(known: {', '.join(sorted(known)) or 'none'})")
    return known


# -- requests -------------------------------------------------------------------------------------

def _await(pubsub: Any, deadline: float, accept: Callable[[Dict[str, Any]], Any]) -> Any:
    """The first pub/sub message `accept` returns a value for, or None at the deadline."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        got = pubsub.get_message(timeout=left)
        if got is not None:
            value = accept(got)
            if value is not None:
                return value


def _result_of(mig: str, reply: str) -> Callable[[Dict[str, Any]], Optional[Dict[str, Any]]]:
    def accept(got: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        if got.get("type") != "message":
            return None
        try:
            msg = wire.decode(got["data"])
        except wire.WireError as e:
            LOG.warning("ignoring a malformed message on %s: %s", reply, e)
            return None
        if msg.type != wire.OP_RESULT or msg.mig != mig:
            LOG.warning("ignoring %s for %s on %s (waiting for %s)", msg.type, msg.mig, reply, mig)
            return None
        if not isinstance(msg.body.get("ok"), bool):
            LOG.warning("ignoring an OP_RESULT without a boolean 'ok' on %s", reply)
            return None
        return msg.body
    return accept


@_on_bus
def request(bus: redis.Redis, kind: str, initiator: str, dpid: int, body: Dict[str, Any],
            wait_s: float) -> Dict[str, Any]:
    """Send one operator request to `initiator` and return its OP_RESULT body."""
    mig = secrets.token_hex(8)
    reply = REPLY_PREFIX + mig
    deadline = time.monotonic() + wait_s
    pubsub = bus.pubsub()
    try:
        pubsub.subscribe(reply)
        if _await(pubsub, deadline, lambda m: m.get("type") == "subscribe" or None) is None:
            raise NoAnswer(f"bus: could not subscribe to {reply} within {wait_s:.1f} s")
        msg = wire.Msg(kind, mig, dpid, OPERATOR, dict(body, reply=reply))
        if not bus.publish(wire.channel(initiator), wire.encode(msg)):
            raise SdnmigError(f"{initiator} stopped listening on {wire.channel(initiator)}: "
                              "is it still running?")
        result = _await(pubsub, deadline, _result_of(mig, reply))
    finally:
        pubsub.close()
    if result is None:
        raise NoAnswer(f"no answer from {initiator} within {wait_s:.1f} s: the request may still "
                       "be running (see 'sdnmig status')")
    return result


@_on_bus
def migrate(bus: redis.Redis, dpid: Any, to: Optional[Sequence[str]] = None,
            fixed: Optional[str] = None, auto: Optional[int] = None, commit: str = "phase2",
            transfer: str = "copy", timeout: float = 10.0, *, mode: Optional[str] = None,
            grace: float = REPLY_GRACE_S) -> Dict[str, Any]:
    """Ask the switch's MASTER to migrate it; return the migration record, whatever its outcome.

    Raises SdnmigError for a request refused before or by the controller, NoAnswer when no
    result came within timeout + grace, BusError when the bus fails.
    """
    dpid = parse_dpid(dpid)
    body = migrate_body(to, fixed, auto, commit, transfer, timeout, mode)
    initiator = _master(bus, dpid)
    known = _known_ids(bus, body["to"])
    if initiator in body["to"]:
        raise SdnmigError(f"{initiator} is already MASTER of switch {dpid:#x}: migrate toward "
                          "other controllers")
    others = sorted(i for i in known if i != initiator)
    if auto is not None and auto > len(others):
        raise SdnmigError(f"auto {auto}: only {len(others)} other controller(s) known "
                          f"({', '.join(others) or 'none'})")
    _require_listening(bus, initiator, dpid)
    result = request(bus, wire.OP_MIGRATE, initiator, dpid, body, body["timeout_s"] + grace)
    record = result.get("record")
    if not isinstance(record, dict):
        raise SdnmigError(f"{initiator} refused the migration: "
                          f"{result.get('error') or 'no reason given'}")
    return record


@_on_bus
def cancel(bus: redis.Redis, dpid: Any, timeout: float = 10.0) -> Dict[str, Any]:
    """Ask the switch's MASTER to cancel its migration in flight; return the OP_RESULT body."""
    dpid = parse_dpid(dpid)
    wait_s = _check_timeout(timeout)
    initiator = _master(bus, dpid)
    _require_listening(bus, initiator, dpid)
    result = request(bus, wire.OP_CANCEL, initiator, dpid, {}, wait_s)
    if not result["ok"]:
        why = result.get("error") or "no reason given"
        raise SdnmigError(f"{initiator} could not cancel: {why}")
    return result


# -- what the bus records -------------------------------------------------------------------------

def _dpid_label(key: Any) -> str:
    try:
        return f"{int(_text(key), 16):#x}"
    except ValueError:
        return _text(key)


@_on_bus
def status(bus: redis.Redis) -> Dict[str, Any]:
    """Masters ({'0x1': id}), migrations in flight (oldest first), instances (+ `listening`)."""
    masters = {_dpid_label(k): _text(v) for k, v in bus.hgetall(wire.MASTER_KEY).items()}
    inflight = [_json_object(v, f"{wire.INFLIGHT_KEY} entry {_text(k)!r}")
                for k, v in bus.hgetall(wire.INFLIGHT_KEY).items()]
    inflight.sort(key=lambda r: r.get("started") if isinstance(r.get("started"), (int, float))
                  else 0)
    insts = _instances(bus)
    listening = _listeners(bus, sorted(insts))
    return {"masters": dict(sorted(masters.items())), "inflight": inflight,
            "instances": [dict(insts[i], listening=listening.get(i, 0) > 0) for i in sorted(insts)]}


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= wire.HISTORY_CAP:
        raise SdnmigError(f"limit {limit!r} must be a whole number from 1 to {wire.HISTORY_CAP}")
    return limit


@_on_bus
def history(bus: redis.Redis, limit: Any = DEFAULT_HISTORY) -> List[Dict[str, Any]]:
    """The last `limit` finished migrations, newest first."""
    raw = bus.lrange(wire.HISTORY_KEY, 0, check_limit(limit) - 1)
    return [_json_object(r, f"{wire.HISTORY_KEY}[{n}]") for n, r in enumerate(raw)]


# -- output ---------------------------------------------------------------------------------------

def table(rows: List[List[Any]]) -> str:
    """Left-aligned columns, two spaces apart (the first row is the header)."""
    if not rows:
        return ""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def ms(value: Any) -> str:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f"{value:.1f}" if number else "-"


def format_record(record: Dict[str, Any]) -> str:
    """A migration record for people: outcome and winner, timings, then one row per candidate."""
    dpid = record.get("dpid")
    switch = f"{dpid:#x}" if isinstance(dpid, int) else "?"
    phases = record.get("phases_ms") if isinstance(record.get("phases_ms"), dict) else {}
    cands = ", ".join(record.get("candidates") or []) or "-"
    lines = [
        f"switch {switch}: {record.get('outcome', '?')}, winner {record.get('winner') or 'none'}"
        f" (migration {record.get('mig', '?')}, initiator {record.get('initiator', '?')})",
        f"mode {record.get('mode', '?')}, commit at {record.get('commit', '?')}, transfer "
        f"{record.get('transfer', '?')}; candidates {cands}",
        "total {} ms; ".format(ms(record.get("total_ms"))) + ", ".join(
            f"{p} {ms(phases.get(p))} ms" for p in ("phase1", "phase2", "phase3"))
        + (f"; then buffer drained in {ms(record['drain_ms'])} ms"
           if record.get("drain_ms") is not None else ""),
        f"state {record.get('state_bytes', '-')} bytes, gap {record.get('gap', '-')}, "
        f"buffered {record.get('buffered', '-')}",
    ]
    if record.get("reason"):
        lines.append(f"reason: {record['reason']}")
    detail = record.get("detail") if isinstance(record.get("detail"), dict) else {}
    if detail:
        rows = [["candidate", "state", "phase1 ms", "phase2 ms", "result"]]
        for cand in sorted(detail):
            d = detail[cand] if isinstance(detail[cand], dict) else {}
            mark = " *" if cand == record.get("winner") else ""
            rows.append([cand + mark, d.get("state", "-"), ms(d.get("phase1_ms")),
                         ms(d.get("phase2_ms")), d.get("result") or "-"])
        lines += ["", table(rows)]
    return "\n".join(lines)
