"""VNM commands for the operator: which migrator to ask, the request to send, the answer for people.

Shared by `sdnmig vnm ...` and the HTTP API (`/vnm/<command>`), as sdnmig.lime is for LIME. The
VNM app (ryu_apps.vnm.app) listens on `vnm:ops` of its controller instance's own Redis; the
instance is chosen as a LIME shim's is (sdnmig.lime.choose, app 'vnm'). Requests are checked
with ryu_apps.vnm.core before anything is looked up or sent. Prepare's layout is given whole, or
planned (`Prepare`) from the pairs, the tunnel switch and the wiring of the chosen instance's
bridges (ryu_apps.vnm.plan, sdnmig.lime_topo). A refusal by the app is a `Refused` error.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple,
                    Union)

from lime_shim import client
from lime_shim.plan import Topology, number
from ryu_apps import APPS
from ryu_apps.vnm import core, plan
from ryu_apps.vnm.core import VnmError
from sdnmig import instances, lime, lime_topo
from sdnmig.errors import SdnmigError

if TYPE_CHECKING:
    import redis

VNM_APP = APPS["vnm"]
WHO = "the VNM migrator"
START = "lime,vnm,pathflip"       # the apps a VNM controller instance runs
DEFAULT_TIMEOUT_S = lime.DEFAULT_TIMEOUT_S
Place = Tuple[int, int]           # (old switch, port) of a host


class Refused(lime.Refused):
    """The VNM app answered {"ok": false}: the command was refused, or undone."""


@dataclass(frozen=True)
class Target:
    """A VNM migrator to ask: its instance's Redis, and how to read the wiring of that instance's
    bridges (only when a prepare is planned; tests give a hand-written one)."""

    redis: "redis.Redis"
    wiring: Callable[[], Topology]


TargetFactory = Callable[[Optional[str], Optional[int]], Target]  # (instance id, switch)


def choose(state_dir: Path, ident: Optional[str] = None,
           switch: Optional[int] = None) -> instances.Instance:
    """The controller instance running the VNM app (as sdnmig.lime.choose picks a shim)."""
    return lime.choose(state_dir, ident, switch, app="vnm", who=WHO, start=START)


def wiring_of(inst: Optional[instances.Instance]) -> Callable[[], Topology]:
    """The wiring of `inst`'s bridges (all of this machine's with none), read when called."""
    return lambda: lime_topo.topology(inst.target if inst else None)


def target_factory(state_dir: Path) -> TargetFactory:
    """For the HTTP API: the chosen instance's VNM migrator, looked up per request."""
    def make(ident: Optional[str], switch: Optional[int]) -> Target:
        inst = choose(state_dir, ident, switch)
        return Target(lime.shim_client(inst), wiring_of(inst))
    return make


def run(r: "redis.Redis", req: Dict[str, Any], timeout: float = DEFAULT_TIMEOUT_S
        ) -> Dict[str, Any]:
    """Send a checked request; the answer if ok, else Refused with the app's reason."""
    answer = client.request(r, req, timeout, channel=core.OPS_CHANNEL,
                            who=f"{WHO} (app 'vnm')")
    if not answer["ok"]:
        raise Refused(f"{WHO} refused {req['op']}: {answer.get('error') or 'no reason given'}")
    return answer


def switch_of(req: Any) -> Optional[int]:
    """The first old switch of a prepare (a `Prepare` or a checked request), whose MASTER takes
    it when several instances run the VNM app; None for the other commands."""
    if isinstance(req, Prepare):
        return min(req.pairs)
    pairs = (req.get("layout") or {}).get("pairs") or {}
    return min(number(o, "an old switch") for o in pairs) if pairs else None


# -- checking and planning requests ---------------------------------------------------------------

def check(command: str, body: Any) -> Dict[str, Any]:
    """The request for `command` with this body (no "op" in it), checked as the VNM app will;
    prepare's layout checked whole and written as the core writes it."""
    checked = dict(core.check(command, body))
    if command == "prepare":
        checked["layout"] = core.layout_from(checked["layout"]).to_doc()
    return {"op": command, **checked}


def check_algorithm(algorithm: Optional[str]) -> None:
    """An unknown algorithm fails before anything is planned (finalize's body is only that)."""
    core.check("finalize", {} if algorithm is None else {"algorithm": algorithm})


@dataclass(frozen=True)
class Prepare:
    """A prepare to plan from the wiring: the operator's pairs, tunnel switch and host names,
    checked when made, so that nothing is looked up for bad input."""

    algorithm: str
    pairs: Mapping[int, int]
    tunnel_switch: int
    names: Mapping[str, Place]

    def __post_init__(self) -> None:
        check_algorithm(self.algorithm)
        if not self.pairs:
            raise VnmError("prepare: give at least one pair OLD=NEW, e.g. 0x11=0x21")
        core.pairs_from({hex(o): hex(n) for o, n in self.pairs.items()})
        if self.tunnel_switch in {*self.pairs, *self.pairs.values()}:
            raise VnmError(f"the tunnel switch {self.tunnel_switch:#x} is also one of the "
                           "networks' switches")

    def request(self, topo: Topology) -> Dict[str, Any]:
        layout = plan.layout(topo, self.pairs, self.tunnel_switch, self.names)
        return check("prepare", {"algorithm": self.algorithm, "layout": layout})


def parse_place(text: Any, what: str) -> Place:
    """'0x11:4' -> (0x11, 4): a host's old switch and port."""
    switch, sep, port = text.partition(":") if isinstance(text, str) else ("", "", "")
    if not sep:
        raise SdnmigError(f"{what} {text!r}: write SWITCH:PORT, e.g. 0x11:4")
    return number(switch, f"{what}'s switch"), number(port, f"{what}'s port")


def parse_names(items: Iterable[str]) -> Dict[str, Place]:
    """['h1=0x11:4', ...] (the command line's --host) -> {"h1": (0x11, 4)}."""
    names: Dict[str, Place] = {}
    for item in items:
        name, sep, place = item.partition("=")
        if not sep or not name.strip():
            raise SdnmigError(f"--host {item!r}: write NAME=SWITCH:PORT, e.g. h1=0x11:4")
        if name.strip() in names:
            raise SdnmigError(f"--host: {name.strip()} given twice")
        names[name.strip()] = parse_place(place, f"--host {name.strip()}")
    return names


_BY_PAIRS = {"algorithm": True, "pairs": True, "tunnel_switch": True, "hosts": False}


def prepare_from_body(body: Any) -> Union[Dict[str, Any], "Prepare"]:
    """An HTTP prepare body: the checked request when it gives the layout whole, else the
    `Prepare` its pairs, tunnel_switch and hosts ({"h1": "0x11:4"}) make."""
    if not isinstance(body, dict) or not set(body) & (set(_BY_PAIRS) - {"algorithm"}):
        return check("prepare", body)
    if "layout" in body:
        raise VnmError("prepare: give the layout, or the pairs and tunnel_switch to plan it "
                       "from, not both")
    unknown = sorted(set(body) - set(_BY_PAIRS))
    missing = [f for f, required in _BY_PAIRS.items() if required and f not in body]
    if unknown or missing:
        raise VnmError("prepare: " + "; ".join(
            ([f"unknown field(s) {', '.join(unknown)}"] if unknown else []) +
            ([f"field(s) {', '.join(missing)} required"] if missing else [])) +
            f": use algorithm and layout, or {', '.join(_BY_PAIRS)}")
    pairs, hosts = body["pairs"], body.get("hosts", {})
    if not isinstance(pairs, dict):
        raise VnmError(f'prepare: pairs must map old switches to new ones, e.g. {{"0x11": '
                       f'"0x21"}}, not {pairs!r}')
    if not isinstance(hosts, dict):
        raise VnmError(f'prepare: hosts must map names to places, e.g. {{"h1": "0x11:4"}}, '
                       f'not {hosts!r}')
    return Prepare(body["algorithm"], lime.parse_pairs([f"{o}={n}" for o, n in pairs.items()],
                                                       "pairs"),
                   number(body["tunnel_switch"], "tunnel_switch"),
                   {str(k): parse_place(v, f"hosts[{k}]") for k, v in hosts.items()})


# -- answers for people ---------------------------------------------------------------------------

def format_state(state: Mapping[str, Any]) -> str:
    """The migration's state (Vnm.to_doc) for people: where it is, and where each host is."""
    from sdnmig.ops import table

    name, algorithm = state.get("state", "?"), state.get("algorithm")
    if name == core.IDLE:
        return "migration: idle (nothing prepared)"
    lines = [f"migration: {name}" + (f" ({algorithm})" if algorithm else "")]
    layout = state.get("layout") or {}
    if layout:
        lines.append(f"networks: {', '.join(f'{o}->{n}' for o, n in layout['pairs'].items())} "
                     f"through the tunnel switch {layout['tunnel_switch']}")
    hosts = state.get("hosts") or {}
    if hosts:
        lines.append(table([["host", "on", "moved"]] + [
            [h, where.get("on", "?"), "yes" if where.get("moved") else "not yet"]
            for h, where in sorted(hosts.items())]))
    return "\n".join(lines)


def format_answer(command: str, answer: Mapping[str, Any]) -> str:
    from sdnmig.ops import ms

    lines: List[str] = []
    if command != "status":
        steps = answer.get("steps") or []
        lines.append(f"{command}: done in {ms(answer.get('ms'))} ms" + (
            " (" + ", ".join(f"{s.get('kind', '?')} {ms(s.get('ms'))} ms" for s in steps) + ")"
            if steps else ""))
    lines.append(format_state(answer.get("state") or {}))
    return "\n".join(lines)
