"""The OpenFlow pieces the shim reasons about, without the platform's classes. No I/O.

The shim rewrites only ports (and, for tunnels, adds VLAN push/pop around an output), so a rule is
kept as: its identity (table, priority, match), its actions with outputs made explicit, and the
fields an app can read back (cookie, timeouts, flags). Anything the shim does not rewrite (a
set-field, a meter, a group) travels as `Opaque`, untouched. The adapter converts to and from the
platform's parser classes; this module never imports them.

Reserved port numbers are the same in OpenFlow 1.3, 1.4 and 1.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Optional, Tuple, Union

OFPP_MAX = 0xFFFFFF00
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_TABLE = 0xFFFFFFF9
OFPP_NORMAL = 0xFFFFFFFA
OFPP_FLOOD = 0xFFFFFFFB
OFPP_ALL = 0xFFFFFFFC
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE
OFPP_ANY = 0xFFFFFFFF
OFPCML_NO_BUFFER = 0xFFFF
OFPFF_SEND_FLOW_REM = 1 << 0

#: Ports the shim passes through unchanged: they mean the same on every physical instance.
PASS_THROUGH = frozenset({OFPP_IN_PORT, OFPP_TABLE, OFPP_NORMAL, OFPP_CONTROLLER, OFPP_LOCAL})
#: Ports that mean "every port of the switch": expanded to the logical switch's ports.
EVERY_PORT = frozenset({OFPP_FLOOD, OFPP_ALL})

VLAN_PRESENT = 0x1000  # OFPVID_PRESENT: set on a vlan_vid that a tagged packet carries


def is_physical(port: int) -> bool:
    return 0 < port <= OFPP_MAX


@dataclass(frozen=True)
class Output:
    port: int
    max_len: int = OFPCML_NO_BUFFER


@dataclass(frozen=True)
class PushVlan:
    ethertype: int = 0x8100


@dataclass(frozen=True)
class SetVlan:
    """set_field vlan_vid (the value carries VLAN_PRESENT, as OpenFlow 1.3+ wants)."""

    vid: int


@dataclass(frozen=True)
class PopVlan:
    pass


@dataclass(frozen=True)
class SetInPort:
    """The packet's in_port rewritten (a relayed packet taken in as if it arrived on `port`);
    with Resubmit, the tables look it up again as such (ovs-fields(7): in_port is writable)."""

    port: int


@dataclass(frozen=True)
class Resubmit:
    """Look the packet up again in `table` (Open vSwitch's resubmit, a Nicira extension)."""

    table: int = 0


@dataclass(frozen=True)
class Opaque:
    """An action the shim does not rewrite, kept as the platform object (or any value)."""

    action: Any


Action = Union[Output, PushVlan, SetVlan, PopVlan, SetInPort, Resubmit, Opaque]
Actions = Tuple[Action, ...]
#: A match as sorted (OXM field name, value) pairs; a masked field's value is (value, mask).
Match = Tuple[Tuple[str, Any], ...]


def match_of(**fields: Any) -> Match:
    return tuple(sorted(fields.items()))


def match_get(match: Match, name: str, default: Any = None) -> Any:
    for k, v in match:
        if k == name:
            return v
    return default


def match_set(match: Match, name: str, value: Any) -> Match:
    return tuple(sorted([(k, v) for k, v in match if k != name] + [(name, value)]))


@dataclass(frozen=True)
class Rule:
    """A flow entry. `goto` is a goto-table instruction; `write` are write-actions (rare)."""

    priority: int
    match: Match
    actions: Actions
    table_id: int = 0
    cookie: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0
    flags: int = 0
    goto: Optional[int] = None
    extra: Tuple[Any, ...] = field(default=(), compare=False)  # other instructions, untouched

    @property
    def key(self) -> Tuple[int, int, Match]:
        """What makes two entries the same entry in OpenFlow (an ADD of the same key replaces)."""
        return (self.table_id, self.priority, self.match)

    def outputs(self) -> Tuple[int, ...]:
        return tuple(a.port for a in self.actions if isinstance(a, Output))

    def with_actions(self, actions: Actions) -> "Rule":
        return replace(self, actions=tuple(actions))
