"""Platform statistics messages <-> the rows `stats.py` folds. Parsers come from a datapath.

OpenFlow 1.5 moved a rule's cookie out of FLOW_STATS into FLOW_DESC, so the shim asks 1.5
instances for FLOW_DESC (which carries the counts too) and 1.3/1.4 ones for FLOW. Port stats are
a namedtuple in 1.3 and an object with properties in 1.4/1.5; both are copied, never rebuilt.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any, List, Tuple

from lime_shim import ofconv
from lime_shim.merge import Count
from lime_shim.model import Rule
from lime_shim.stats import CopyRow, Row
from lime_shim.translate import COOKIE_MARK, COOKIE_MASK

PORT_FIELDS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped",
               "rx_errors", "tx_errors", "rx_frame_err", "rx_over_err", "rx_crc_err", "collisions")
TABLE_FIELDS = ("lookup_count", "matched_count")
#: The app's requests the shim answers, by class name: what it asks the instances.
KINDS = {"OFPFlowStatsRequest": "flow", "OFPFlowDescStatsRequest": "flow",
         "OFPAggregateStatsRequest": "flow", "OFPPortStatsRequest": "port",
         "OFPTableStatsRequest": "table"}
REPLIES = ("EventOFPFlowStatsReply", "EventOFPFlowDescStatsReply", "EventOFPPortStatsReply",
           "EventOFPTableStatsReply", "EventOFPAggregateStatsReply")


def _is15(dp: Any) -> bool:
    return hasattr(dp.ofproto_parser, "OFPFlowDescStatsRequest")


def request(dp: Any, kind: str) -> Any:
    """What the shim asks one instance: every shim rule ("flow"), every rule ("rules"), every
    port, every table."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if kind in ("flow", "rules"):
        cls = parser.OFPFlowDescStatsRequest if _is15(dp) else parser.OFPFlowStatsRequest
        cookie, mask = (COOKIE_MARK, COOKIE_MASK) if kind == "flow" else (0, 0)
        return cls(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask,
                   parser.OFPMatch())
    if kind == "port":
        return parser.OFPPortStatsRequest(dp, 0, ofp.OFPP_ANY)
    return parser.OFPTableStatsRequest(dp, 0)


def _pb(stat: Any) -> Tuple[int, int]:
    s = getattr(stat, "stats", None)
    if s is not None:  # 1.5: an OXS list
        return s["packet_count"] if "packet_count" in s else 0, \
            s["byte_count"] if "byte_count" in s else 0
    return stat.packet_count, stat.byte_count


def flow_rows(body: List[Any]) -> List[CopyRow]:
    return [(s.cookie, *_pb(s)) for s in body]


def rule_rows(ofp: Any, body: List[Any]) -> List[Tuple[Rule, float]]:
    """Every rule of a bridge as the shim's Rule, with its age in seconds (for `adopt`)."""
    out = []
    for s in body:
        actions, goto, extra = ofconv.instructions_from(ofp, s.instructions)
        rule = Rule(s.priority, ofconv.match_from(s.match), actions, table_id=s.table_id,
                    cookie=s.cookie, idle_timeout=s.idle_timeout, hard_timeout=s.hard_timeout,
                    flags=s.flags, goto=goto, extra=extra)
        st = getattr(s, "stats", None)
        sec, nsec = st["duration"] if st is not None and "duration" in st \
            else (s.duration_sec, s.duration_nsec)
        out.append((rule, sec + nsec / 1e9))
    return out


def port_fields(body: List[Any]) -> Tuple[str, ...]:
    return tuple(f for f in PORT_FIELDS if body and hasattr(body[0], f))


def port_rows(body: List[Any]) -> List[Row]:
    fields = port_fields(body)
    return [(s.port_no, tuple(getattr(s, f) for f in fields)) for s in body]


def table_rows(body: List[Any]) -> List[Row]:
    return [(s.table_id, tuple(getattr(s, f) for f in TABLE_FIELDS)) for s in body]


def filters(msg: Any) -> Tuple[int, int, int, int, int, Any]:
    """(table_id, out_port, out_group, cookie, cookie_mask, match) of an app's flow request."""
    return (msg.table_id, msg.out_port, msg.out_group, msg.cookie, msg.cookie_mask,
            ofconv.match_from(msg.match))


def _reply(ldp: Any, cls_name: str, mp_type: int, body: Any, xid: int) -> Any:
    ofp = ldp.ofproto
    msg = getattr(ldp.ofproto_parser, cls_name)(ldp, body=body, flags=0)
    msg.version, msg.msg_type, msg.xid, msg.type = (ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY,
                                                    xid, mp_type)
    return msg


def _oxs(parser: Any, secs: float, packets: int, nbytes: int) -> Any:
    return parser.OFPStats(duration=_duration(secs), packet_count=packets, byte_count=nbytes)


def _duration(secs: float) -> Tuple[int, int]:
    whole = int(max(secs, 0.0))
    return whole, int((max(secs, 0.0) - whole) * 1e9)


def flow_reply(ldp: Any, req: Any, rows: List[Tuple[Rule, float, Count]]) -> Any:
    """The app's answer: rows of (its rule, age in s, (packets, bytes))."""
    parser = ldp.ofproto_parser
    name = type(req).__name__
    if name == "OFPAggregateStatsRequest":
        packets, nbytes = sum(c[0] for _, _, c in rows), sum(c[1] for _, _, c in rows)
        if _is15(ldp):
            body = parser.OFPAggregateStats(stats=parser.OFPStats(
                flow_count=len(rows), packet_count=packets, byte_count=nbytes))
        else:
            body = parser.OFPAggregateStats(packets, nbytes, len(rows))
        return _reply(ldp, "OFPAggregateStatsReply", req.type, body, req.xid)
    body = []
    for rule, age, (packets, nbytes) in rows:
        match = ofconv.match_to(parser, rule.match)
        if name == "OFPFlowDescStatsRequest":
            body.append(parser.OFPFlowDesc(
                table_id=rule.table_id, priority=rule.priority, idle_timeout=rule.idle_timeout,
                hard_timeout=rule.hard_timeout, flags=rule.flags, importance=0,
                cookie=rule.cookie, match=match, stats=_oxs(parser, age, packets, nbytes),
                instructions=_instructions(ldp, rule)))
        elif _is15(ldp):  # 1.5 FLOW_STATS: no cookie, no instructions
            body.append(parser.OFPFlowStats(table_id=rule.table_id, reason=0,
                                            priority=rule.priority, match=match,
                                            stats=_oxs(parser, age, packets, nbytes)))
        else:
            sec, nsec = _duration(age)
            body.append(parser.OFPFlowStats(
                table_id=rule.table_id, duration_sec=sec, duration_nsec=nsec,
                priority=rule.priority, idle_timeout=rule.idle_timeout,
                hard_timeout=rule.hard_timeout, flags=rule.flags, cookie=rule.cookie,
                packet_count=packets, byte_count=nbytes, match=match,
                instructions=_instructions(ldp, rule)))
    cls = {"OFPFlowDescStatsRequest": "OFPFlowDescStatsReply"}.get(name, "OFPFlowStatsReply")
    return _reply(ldp, cls, req.type, body, req.xid)


def _instructions(ldp: Any, rule: Rule) -> List[Any]:
    return ofconv.flow_add_to(ldp, rule).instructions


def port_reply(ldp: Any, req: Any, rows: List[Tuple[int, Any, Count]]) -> Any:
    """Rows of (logical port, a physical row of it to copy, summed counts)."""
    body = []
    for lport, like, counts in rows:
        fields = port_fields([like])
        values = dict(zip(fields, counts), port_no=lport)
        if hasattr(like, "_replace"):
            body.append(like._replace(**values))
        else:
            row = copy.copy(like)
            for k, v in values.items():
                setattr(row, k, v)
            body.append(row)
    return _reply(ldp, "OFPPortStatsReply", req.type, body, req.xid)


def table_reply(ldp: Any, req: Any, rows: List[Tuple[int, int, Count]]) -> Any:
    """Rows of (table id, the app's rules in it, (lookups, matches))."""
    parser = ldp.ofproto_parser
    body = [parser.OFPTableStats(tid, active, lookups, matched)
            for tid, active, (lookups, matched) in rows]
    return _reply(ldp, "OFPTableStatsReply", req.type, body, req.xid)


def flow_removed(ldp: Any, rule: Rule, reason: int, age: float, count: Count) -> Any:
    """The FLOW_REMOVED an app gets for a rule the shim timed out."""
    packets, nbytes = count
    sec, nsec = _duration(age)
    phys = SimpleNamespace(reason=reason, xid=0, duration_sec=sec, duration_nsec=nsec,
                           packet_count=packets, byte_count=nbytes)
    if _is15(ldp):
        phys.stats = _oxs(ldp.ofproto_parser, age, packets, nbytes)
    return ofconv.flow_removed_to(ldp, rule, phys)


def removed_count(msg: Any) -> Tuple[int, int]:
    """(packets, bytes) a FLOW_REMOVED carries (1.5: in its stats)."""
    return _pb(msg)
