"""A test app on the LIME shim: asks a logical switch what an app may ask, and says what came back.

Requests arrive on Redis channel `lime:probe` as JSON {op, switch, reply, ...}; the answer (one
JSON message) goes to the `reply` channel once the shim has answered. Ops: `flow` (flow stats;
`table_id`, `cookie`, `cookie_mask`), `port`, `table`, `aggregate`, `barrier`, `add` (a rule:
`priority`, `eth_type`, `idle`, `hard`, asks FLOW_REMOVED), `mark` (a rule version: one rule at
`priority` for every UDP packet that sets ip_dscp to `dscp` and outputs to each of `out`; an
output to the packet's own in_port is dropped, so one rule carries both directions). Every
FLOW_REMOVED and barrier reply it gets is appended (JSON) to the Redis lists
`lime:probe:removed` / `lime:probe:barriers`, so a test can count them. Load it by module path: `ryu_apps.limeprobe`.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict

from lime_shim import lime_ofp_event as lev
from lime_shim.app import BRICK_NAME as SHIM
from ryu_apps import config
from ryu_apps.kvs import connect
from ryu_apps.loud import MARKER, loud
from sdnmig import compat

LOG = logging.getLogger("sdnmig.limeprobe")
CHANNEL = "lime:probe"
REMOVED, BARRIERS = "lime:probe:removed", "lime:probe:barriers"


class LimeProbe(compat.RyuApp):
    OFP_VERSIONS = list(compat.OFPROTOS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = config.load()
        self.redis = connect(cfg.redis_host, cfg.redis_port, cfg.redis_password)
        self.waiting: Dict[int, str] = {}  # xid -> reply channel
        self.threads.append(compat.hub.spawn(self._listen))

    def _listen(self) -> None:
        ps = self.redis.pubsub(ignore_subscribe_messages=True)
        ps.subscribe(CHANNEL)
        for m in ps.listen():
            try:
                self._ask(json.loads(m["data"]))
            except Exception:  # noqa: BLE001 -- a test app: say it loudly and go on
                LOG.exception("%s in the LIME probe", MARKER)

    def _ask(self, req: Dict[str, Any]) -> None:
        ldp = compat.app_manager.lookup_service_brick(SHIM).ldps[int(req["switch"])]
        ofp, parser, op = ldp.ofproto, ldp.ofproto_parser, req["op"]
        if op == "add":
            m = parser.OFPFlowMod(ldp, priority=req["priority"], idle_timeout=req.get("idle", 0),
                                  hard_timeout=req.get("hard", 0), flags=ofp.OFPFF_SEND_FLOW_REM,
                                  match=parser.OFPMatch(eth_type=req["eth_type"]), instructions=[])
            ldp.send_msg(m)
            self.redis.publish(req["reply"], json.dumps({"ok": True}))
            return
        if op == "mark":
            acts = [parser.OFPActionSetField(ip_dscp=int(req["dscp"]))]
            acts += [parser.OFPActionOutput(int(out)) for out in req["out"]]
            ldp.send_msg(parser.OFPFlowMod(
                ldp, priority=req["priority"], match=parser.OFPMatch(eth_type=0x0800, ip_proto=17),
                instructions=[parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, acts)]))
            self.redis.publish(req["reply"], json.dumps({"ok": True}))
            return
        if op in ("flow", "aggregate"):
            cls = parser.OFPFlowStatsRequest if op == "flow" else parser.OFPAggregateStatsRequest
            msg = cls(ldp, 0, req.get("table_id", ofp.OFPTT_ALL), ofp.OFPP_ANY, ofp.OFPG_ANY,
                      req.get("cookie", 0), req.get("cookie_mask", 0), parser.OFPMatch())
            if hasattr(parser, "OFPFlowDescStatsRequest") and op == "flow":
                msg = parser.OFPFlowDescStatsRequest(ldp, 0, msg.table_id, ofp.OFPP_ANY,
                                                     ofp.OFPG_ANY, msg.cookie, msg.cookie_mask,
                                                     parser.OFPMatch())
        elif op == "port":
            msg = parser.OFPPortStatsRequest(ldp, 0, ofp.OFPP_ANY)
        elif op == "table":
            msg = parser.OFPTableStatsRequest(ldp, 0)
        else:
            msg = parser.OFPBarrierRequest(ldp)
        ldp.set_xid(msg)
        self.waiting[msg.xid] = req["reply"]
        ldp.send_msg(msg)

    def _answer(self, msg: Any, doc: Any) -> None:
        reply = self.waiting.pop(msg.xid, None)
        if reply is not None:
            self.redis.publish(reply, json.dumps({"xid": msg.xid, "body": doc}))

    @compat.set_ev_cls([lev.EventOFPFlowStatsReply, lev.EventOFPFlowDescStatsReply],
                       compat.MAIN_DISPATCHER)
    @loud
    def _flows(self, ev: Any) -> None:
        self._answer(ev.msg, [dict(cookie=getattr(s, "cookie", None), priority=s.priority,
                                   table_id=s.table_id, packets=_count(s, "packet_count"),
                                   bytes=_count(s, "byte_count")) for s in ev.msg.body])

    @compat.set_ev_cls(lev.EventOFPAggregateStatsReply, compat.MAIN_DISPATCHER)
    @loud
    def _aggregate(self, ev: Any) -> None:
        b = ev.msg.body
        self._answer(ev.msg, dict(packets=_count(b, "packet_count"), flows=_count(b, "flow_count")))

    @compat.set_ev_cls(lev.EventOFPPortStatsReply, compat.MAIN_DISPATCHER)
    @loud
    def _ports(self, ev: Any) -> None:
        self._answer(ev.msg, {str(s.port_no): [s.rx_packets, s.tx_packets] for s in ev.msg.body})

    @compat.set_ev_cls(lev.EventOFPTableStatsReply, compat.MAIN_DISPATCHER)
    @loud
    def _tables(self, ev: Any) -> None:
        self._answer(ev.msg, {str(s.table_id): [s.active_count, s.lookup_count, s.matched_count]
                              for s in ev.msg.body})

    @compat.set_ev_cls(lev.EventOFPBarrierReply, compat.MAIN_DISPATCHER)
    @loud
    def _barrier(self, ev: Any) -> None:
        self.redis.rpush(BARRIERS, json.dumps(ev.msg.xid))
        self._answer(ev.msg, None)

    @compat.set_ev_cls(lev.EventOFPFlowRemoved, compat.MAIN_DISPATCHER)
    @loud
    def _removed(self, ev: Any) -> None:
        m = ev.msg
        self.redis.rpush(REMOVED, json.dumps(dict(priority=m.priority, reason=m.reason,
                                                  packets=_count(m, "packet_count"))))


def _count(s: Any, name: str) -> int:
    stats = getattr(s, "stats", None)
    return stats[name] if stats is not None else getattr(s, name)
