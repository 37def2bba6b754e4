"""LIME operations for the operator: which shim to ask, the request to send, the answer for people.

Shared by `sdnmig lime ...` and the HTTP API (`/lime/<op>`). The shim of a controller instance
listens on that instance's own Redis (not the bus), so a request needs an instance: the one named,
else the only recorded instance running the `lime` app, else (several) the one the bus records as
the switch's MASTER, the way ERC requests go to the MASTER. Requests are checked by
lime_shim.plan before anything is sent; a refusal by the shim is a `Refused` error with its text.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional

from lime_shim import client, plan
from ryu_apps import APPS
from ryu_apps.erc import wire
from sdnmig import instances
from sdnmig.errors import SdnmigError

if TYPE_CHECKING:
    import redis

LIME_APP = APPS["lime"]
DEFAULT_TIMEOUT_S = 30.0

ShimFactory = Callable[[Optional[str], Optional[int]], "redis.Redis"]  # (instance id, switch)


class Refused(SdnmigError):
    """The shim answered {"ok": false}: the operation was refused (or undone)."""


def choose(state_dir: Path, ident: Optional[str] = None, switch: Optional[int] = None, *,
           app: str = "lime", who: str = "the LIME shim",
           start: str = "lime,learning") -> instances.Instance:
    """The controller instance whose shim takes the request (see the module docstring); other
    apps asked the same way (the VNM migrator) name theirs: `app` (in ryu_apps.APPS), `who`
    for people, `start` the --apps that would start it."""
    module = APPS[app]
    known = instances.Registry(state_dir).load()
    if ident is not None:
        if ident not in known:
            raise SdnmigError(f"no instance {ident} in {state_dir} (have: "
                              f"{', '.join(sorted(known)) or 'none'})")
        if module not in known[ident].apps:
            raise SdnmigError(f"instance {ident} does not run {who} (app '{app}')")
        return known[ident]
    shims = sorted((i for i in known.values() if module in i.apps), key=lambda i: i.id)
    if not shims:
        raise SdnmigError(f"no instance in {state_dir} runs {who}: start one with "
                          f"'sdnmig controllers start --apps {start}'")
    if len(shims) == 1:
        return shims[0]
    master = _master(state_dir, switch) if switch is not None else None
    for inst in shims:
        if inst.id == master:
            return inst
    raise SdnmigError(f"several instances run {who} ({', '.join(i.id for i in shims)}): "
                      "choose one with --controller")


def _master(state_dir: Path, switch: int) -> Optional[str]:
    bus = instances.load_bus(state_dir)
    if bus is None:
        return None
    try:
        raw = bus.client().hget(wire.MASTER_KEY, wire.dpid_text(switch))
    except Exception:  # noqa: BLE001 -- the bus is only a hint here; the choice then fails clearly
        return None
    return raw.decode() if isinstance(raw, bytes) else raw


def shim_client(inst: instances.Instance) -> "redis.Redis":
    from ryu_apps.kvs import open_client

    try:
        password = inst.redis_password
    except OSError as e:
        raise SdnmigError(f"instance {inst.id}: {e}") from None
    return open_client(inst.host, inst.redis_port, password, socket_timeout=5,
                       socket_connect_timeout=3)


def shim_factory(state_dir: Path) -> ShimFactory:
    """For the HTTP API: a client of the chosen instance's Redis, looked up per request."""
    return lambda ident, switch: shim_client(choose(state_dir, ident, switch))


def run(r: "redis.Redis", req: Dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S
        ) -> Dict[str, Any]:
    """Send a checked request; the answer if ok, else Refused with the shim's reason."""
    answer = client.request(r, req, timeout)
    if not answer["ok"]:
        raise Refused(f"the shim refused {req['op']}: {answer.get('error') or 'no reason given'}")
    return answer


def switch_of(req: Mapping[str, Any]) -> Optional[int]:
    """The logical switch a request is about (an ensemble: its first step's), for `choose`."""
    if "switch" in req:
        return req["switch"]
    steps = req.get("steps") or []
    return steps[0]["switch"] if steps else None


# -- building requests from the wiring, with what the operator gave explicitly -------------------

def with_overrides(planned: Dict[str, Any], ports: Optional[Dict[int, int]] = None,
                   tunnels: Optional[Dict[int, List[int]]] = None,
                   neighbours: Optional[List[List[int]]] = None) -> Dict[str, Any]:
    """The planned clone request, with each port the operator placed taken from them instead."""
    out = dict(planned)
    given = set(ports or {}) | set(tunnels or {})
    out["ports"] = {**{p: v for p, v in planned.get("ports", {}).items() if p not in given},
                    **(ports or {})}
    out["tunnels"] = {**{p: v for p, v in planned.get("tunnels", {}).items() if p not in given},
                      **(tunnels or {})}
    if neighbours is not None:
        out["neighbours"] = neighbours
    return out


def spares_of(inst: Optional[instances.Instance]) -> List[int]:
    """The spares the instance's shim was configured with (lime_spares), if recorded."""
    text = (inst.extra_conf.get("lime_spares", "") if inst else "") or ""
    return [plan.number(d, "lime_spares") for d in text.replace(";", ",").split(",") if d.strip()]


def parse_pairs(items: Iterable[str], what: str) -> Dict[int, int]:
    """'3=0x103' items -> {3: 0x103}."""
    pairs: Dict[int, int] = {}
    for item in items:
        left, sep, right = item.partition("=")
        if not sep:
            raise SdnmigError(f"{what} {item!r}: write SWITCH=DPID, e.g. 3=0x103")
        switch = plan.number(left, "switch")
        if switch in pairs:
            raise SdnmigError(f"{what}: switch {switch:#x} given twice")
        pairs[switch] = plan.number(right, what)
    return pairs


# -- answers for people ---------------------------------------------------------------------------

def _hex(value: Any) -> str:
    return f"{value:#x}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def format_status(answer: Mapping[str, Any]) -> str:
    from sdnmig.ops import table

    switches = answer.get("switches") or {}
    if not switches:
        lines = ["no logical switch yet (no switch connected to the shim)"]
    else:
        lines = [table([["logical switch", "instances"]] +
                       [[ls, ", ".join(map(str, insts))] for ls, insts in sorted(
                           switches.items(), key=lambda kv: plan.number(kv[0], "switch"))])]
    rows = [["switch", "neighbour", "its port", "old", "new", "onto"]]
    for ls, links in sorted((answer.get("links") or {}).items()):
        rows += [[ls, *[_hex(x) if i in (0, 4) else str(x) for i, x in enumerate(link)]]
                 for link in links if isinstance(link, list) and len(link) == 5]
    lines += ["", table(rows) if len(rows) > 1 else "no neighbour rewired by a clone"]
    return "\n".join(lines)


def format_answer(op: str, answer: Mapping[str, Any]) -> str:
    if op == "status":
        return format_status(answer)
    rest = {k: v for k, v in answer.items() if k not in ("ok", "switch", "instances", "ms")}
    head = f"{op}: done"
    if "switch" in answer:
        head = f"{op}: logical switch {_hex(answer['switch'])}"
        if "instances" in answer:
            head += " now on " + ", ".join(_hex(i) for i in answer["instances"] or [])
    if "ms" in answer:
        head += f" ({answer['ms']} ms)"
    return "\n".join([head] + [f"  {k}: {json.dumps(v)}" for k, v in sorted(rest.items())])
