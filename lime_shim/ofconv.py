"""Platform OpenFlow objects <-> the shim's model. Parsers come from a datapath (never imported).

Only the parts the shim rewrites become model values (outputs, the VLAN tag it pushes and pops,
goto-table); every other action or instruction is carried as `Opaque` / `extra` and rebuilt as
the very object the app gave.
"""
from __future__ import annotations

from copy import deepcopy
from typing import Any, List, Optional, Tuple

from lime_shim.model import (Action, Actions, Match, Opaque, Output, PopVlan, PushVlan, Resubmit,
                             Rule, SetInPort, SetVlan)
from lime_shim.table import FlowMod
from lime_shim.translate import COOKIE_MARK, COOKIE_MASK, FORM_MASK
from ryu_apps import ofmsgs


#: OF1.3 old-API match fields read straight from the parser's Flow (field bit, name, Flow attr,
#: is a MAC): the learning app's matches, without a serialise-and-parse round trip (87 us -> 2 us
#: a match, measured with experiments/lime_overhead.py's profile).
_OLD_FIELDS = ((0, "in_port", "in_port", False), (3, "eth_dst", "dl_dst", True),
               (4, "eth_src", "dl_src", True), (5, "eth_type", "dl_type", False))
_OLD_BITS = sum(1 << bit for bit, *_ in _OLD_FIELDS)
_ALL_BITS = (1 << 64) - 1


def _old_api_fast(ofmatch: Any) -> Optional[Match]:
    """The match, if it uses only unmasked in_port/eth_dst/eth_src/eth_type; else None."""
    wc = getattr(ofmatch, "_wc", None)
    if wc is None or ofmatch._fields2 or wc.dl_dst_mask or wc.dl_src_mask:
        return None
    used = ~wc.wildcards & _ALL_BITS
    if used & ~_OLD_BITS:
        return None
    flow = ofmatch._flow
    out = []
    for bit, name, attr, is_mac in _OLD_FIELDS:
        if used >> bit & 1:
            v = getattr(flow, attr)
            out.append((name, bytes(v).hex(":") if is_mac and isinstance(v, (bytes, bytearray))
                        else v))
    return tuple(sorted(out))


def match_from(ofmatch: Any) -> Match:
    old_api = getattr(ofmatch, "_composed_with_old_api", None)
    if old_api is not None and old_api():
        fast = _old_api_fast(ofmatch)
        if fast is not None:
            return fast
        # OF1.3's set_dl_src()-style match keeps its fields unparsed until serialised (the
        # learning app builds its matches that way for speed): read it as the wire has it.
        copy = deepcopy(ofmatch)  # serialising an old-API match changes it
        buf = bytearray()
        copy.serialize(buf, 0)
        ofmatch = type(ofmatch).parser(bytes(buf), 0)
    return tuple(sorted((k, _normal(v)) for k, v in ofmatch.items()))


def _normal(v: Any) -> Any:
    """A MAC or IP address with an all-ones mask is the exact address (OVS treats them as the
    same entry, so the shim's table must too)."""
    if isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], str):
        mask = v[1].replace(":", "").replace(".", "").lower()
        if mask and (set(mask) == {"f"} or v[1] == "255.255.255.255"):
            return v[0]
    return v


def match_to(parser: Any, match: Match) -> Any:
    return parser.OFPMatch(**dict(match))


def match_to_wire(parser: Any, match: Match) -> Any:
    """A match that is only sent (its fields are not read back by key: OF1.3 compose-API
    matches cannot be until parsed)."""
    if hasattr(parser.OFPMatch, "set_dl_src") and all(
            k in _OLD_NAMES and isinstance(v, (int, str)) for k, v in match):
        # OF1.3: the compose API takes raw MAC bytes (the keyword API goes through netaddr).
        m = parser.OFPMatch()
        for k, v in match:
            _OLD_NAMES[k](m, v)
        return m
    return parser.OFPMatch(**dict(match))


_OLD_NAMES = {"in_port": lambda m, v: m.set_in_port(v),
              "eth_dst": lambda m, v: m.set_dl_dst(bytes.fromhex(v.replace(":", ""))),
              "eth_src": lambda m, v: m.set_dl_src(bytes.fromhex(v.replace(":", ""))),
              "eth_type": lambda m, v: m.set_dl_type(v)}


def actions_from(ofp: Any, actions: List[Any]) -> Actions:
    out: List[Action] = []
    for a in actions:
        if a.type == ofp.OFPAT_OUTPUT:
            out.append(Output(a.port, a.max_len))
        else:
            out.append(Opaque(a))
    return tuple(out)


def actions_to(ofp: Any, parser: Any, actions: Actions) -> List[Any]:
    out: List[Any] = []
    for a in actions:
        if isinstance(a, Output):
            out.append(parser.OFPActionOutput(a.port, a.max_len))
        elif isinstance(a, PushVlan):
            out.append(parser.OFPActionPushVlan(a.ethertype))
        elif isinstance(a, SetVlan):
            out.append(parser.OFPActionSetField(vlan_vid=a.vid))
        elif isinstance(a, PopVlan):
            out.append(parser.OFPActionPopVlan())
        elif isinstance(a, SetInPort):
            # Open vSwitch 3.1 takes a set-field of the 16-bit Nicira in_port on OpenFlow 1.3
            # and 1.5; it refuses the 32-bit OXM in_port (OFPBAC_BAD_SET_ARGUMENT), and the
            # Nicira register loads on 1.5 (BAD_EXPERIMENTER_TYPE). Measured, see the README.
            out.append(parser.OFPActionSetField(in_port_nxm=a.port))
        elif isinstance(a, Resubmit):
            out.append(parser.NXActionResubmitTable(table_id=a.table))
        else:
            out.append(a.action)
    return out


def instructions_from(ofp: Any, insts: List[Any]) -> Tuple[Actions, Any, Tuple[Any, ...]]:
    """(apply-actions, goto table or None, every other instruction)."""
    actions: Actions = ()
    goto = None
    extra: List[Any] = []
    for i in insts:
        if i.type == ofp.OFPIT_APPLY_ACTIONS:
            actions += actions_from(ofp, i.actions)
        elif i.type == ofp.OFPIT_GOTO_TABLE:
            goto = i.table_id
        else:
            extra.append(i)
    return actions, goto, tuple(extra)


def flow_mod_from(msg: Any) -> FlowMod:
    ofp = msg.datapath.ofproto
    actions, goto, extra = instructions_from(ofp, msg.instructions)
    rule = Rule(msg.priority, match_from(msg.match), actions, table_id=msg.table_id,
                cookie=msg.cookie, idle_timeout=msg.idle_timeout, hard_timeout=msg.hard_timeout,
                flags=msg.flags, goto=goto, extra=extra)
    return FlowMod(msg.command, rule, msg.cookie_mask, msg.out_port, msg.out_group)


def instructions_to(ofp: Any, parser: Any, rule: Rule) -> List[Any]:
    """The inverse of instructions_from."""
    insts: List[Any] = []
    if rule.actions:
        insts.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                                  actions_to(ofp, parser, rule.actions)))
    insts += list(rule.extra)
    if rule.goto is not None:
        insts.append(parser.OFPInstructionGotoTable(rule.goto))
    return insts


def in_port_of(ofmatch: Any) -> Optional[int]:
    """The match's in_port, or None. Cheap: an OF1.3 match built with the old API (the learning
    app's) keeps its fields in a Flow and a wildcard mask, bit 0 of which is in_port's; the
    parser's own test for that API builds a FlowWildcards each time (~5 us)."""
    fields = ofmatch._fields2
    if not fields:
        wc = getattr(ofmatch, "_wc", None)
        return None if wc is None or wc.wildcards & 1 else ofmatch._flow.in_port
    for k, v in fields:
        if k == "in_port":
            return v
    return None


def flow_add_to(dp: Any, rule: Rule) -> Any:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    insts = instructions_to(ofp, parser, rule)
    return parser.OFPFlowMod(dp, cookie=rule.cookie, table_id=rule.table_id,
                             command=ofp.OFPFC_ADD, idle_timeout=rule.idle_timeout,
                             hard_timeout=rule.hard_timeout, priority=rule.priority,
                             buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY,
                             out_group=ofp.OFPG_ANY, flags=rule.flags,
                             match=match_to_wire(parser, rule.match), instructions=insts)


def flow_delete_cookie(dp: Any, cookie: int) -> Any:
    """Delete the physical copies of one logical rule, whatever their form (every table)."""
    return ofmsgs.flow_delete(dp, cookie=cookie & ~FORM_MASK,
                              cookie_mask=0xFFFFFFFFFFFFFFFF & ~FORM_MASK)


def flow_delete_cookie_all(dp: Any) -> Any:
    """Delete every rule the shim installed on a bridge (a retired instance), nothing else."""
    return ofmsgs.flow_delete(dp, cookie=COOKIE_MARK, cookie_mask=COOKIE_MASK)


def flow_delete_strict(dp: Any, rule: Rule) -> Any:
    """Delete one physical copy (a key the current translation no longer produces)."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(dp, cookie=rule.cookie & ~FORM_MASK,
                             cookie_mask=0xFFFFFFFFFFFFFFFF & ~FORM_MASK, table_id=rule.table_id,
                             command=ofp.OFPFC_DELETE_STRICT, priority=rule.priority,
                             out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                             match=match_to_wire(parser, rule.match))


def flow_removed_to(ldp: Any, rule: Rule, phys: Any) -> Any:
    """The FLOW_REMOVED an app gets for its rule, from the one a physical copy raised."""
    ofp, parser = ldp.ofproto, ldp.ofproto_parser
    common = dict(cookie=rule.cookie, priority=rule.priority, reason=phys.reason,
                  table_id=rule.table_id, idle_timeout=rule.idle_timeout,
                  hard_timeout=rule.hard_timeout, match=match_to(parser, rule.match))
    if hasattr(phys, "stats"):  # OpenFlow 1.5: durations and counts are in a stats field
        msg = parser.OFPFlowRemoved(ldp, stats=phys.stats, **common)
    else:
        msg = parser.OFPFlowRemoved(ldp, duration_sec=phys.duration_sec,
                                    duration_nsec=phys.duration_nsec,
                                    packet_count=phys.packet_count, byte_count=phys.byte_count,
                                    **common)
    msg.version, msg.msg_type, msg.xid = ofp.OFP_VERSION, ofp.OFPT_FLOW_REMOVED, phys.xid
    return msg
