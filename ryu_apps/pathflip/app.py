"""The VNM paper's control application as a platform app (OpenFlow 1.3 and 1.5): the path between
two hosts flips between an upper and a lower path every `pathflip_period_s` (see `core`).

Load with `osken-manager ryu_apps.pathflip.app`, alone (the role manager comes with it) or on the
LIME shim (`[sdnmig] events = lime`), where its flips are FLOW_MODs like any app's and go through
a migration's two-phase update without this app knowing. It never answers a packet-in.
A switch's rules are sent when this instance becomes its MASTER; a greenthread asks the core
every POLL_S (or at the flip's due time, if sooner) whether a flip is due and sends it.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List

from ryu_apps import config, ofmsgs, source
from ryu_apps.loud import MARKER, loud
from ryu_apps.pathflip.core import PathFlip, Rule
from ryu_apps.roles.core import Role
from sdnmig import compat

LOG = logging.getLogger("sdnmig.pathflip")
#: Cookie of every flow this app installs (upper 32 bits, as ofmsgs.COOKIE_APP_MASK selects).
PATHFLIP_COOKIE = 0x5D4EF11F_00000000
PRIORITY = 20
POLL_S = 0.05  # longest sleep of the flip loop: a flip is at most this late after switches change


class PathFlipApp(compat.RyuApp):
    OFP_VERSIONS = list(compat.OFPROTOS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.cfg = config.pathflip()
        except config.ConfigError as e:
            raise SystemExit(f"sdnmig: {e}") from None
        self.core = PathFlip(self.cfg)
        self.datapaths: Dict[int, Any] = {}
        self.threads.append(compat.hub.spawn(self._flip_loop))
        a, u, lo, b = self.cfg.switches
        LOG.info("pathflip: A=%#x U=%#x L=%#x B=%#x, ports up=%d down=%d host=%d, every %gs",
                 a, u, lo, b, self.cfg.up, self.cfg.down, self.cfg.host, self.cfg.period_s)

    @property
    def flips(self) -> int:
        return self.core.flips

    # -- events -------------------------------------------------------------------------------------
    @compat.set_ev_cls(source.EventRoleChanged)
    @loud
    def _role_changed(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.role != Role.MASTER:
            self._forget(dp.id)
            return
        rules = self.core.switch_up(dp.id)
        if not rules:
            return  # not one of the four
        self.datapaths[dp.id] = dp
        self._send(rules)
        LOG.info("pathflip: %#x is ours: %d rule(s) sent (path %s)", dp.id, len(rules),
                 self.core.path)

    @compat.set_ev_cls(source.ofp_event.EventOFPStateChange, compat.DEAD_DISPATCHER)
    @loud
    def _switch_gone(self, ev: Any) -> None:
        dp = ev.datapath
        # Only the connection we hold: a reconnected switch's old one may report DEAD late.
        if dp.id is not None and self.datapaths.get(dp.id) is dp:
            self._forget(dp.id)

    def _forget(self, dpid: int) -> None:
        if self.datapaths.pop(dpid, None) is not None:
            self.core.switch_down(dpid)
            LOG.info("pathflip: %#x is no longer ours: flips pause", dpid)

    # -- flipping -----------------------------------------------------------------------------------
    def _flip_loop(self) -> None:
        while True:
            due = self.core.due
            wait = POLL_S if due is None else min(POLL_S, max(0.0, due - time.monotonic()))
            compat.hub.sleep(wait)
            try:
                self._tick(time.monotonic())
            except Exception:  # noqa: BLE001 -- a dead greenthread would stop all flipping
                LOG.exception("%s in pathflip's flip", MARKER)

    def _tick(self, now: float) -> None:
        rules = self.core.tick(now)
        if rules:
            LOG.info("pathflip: flip %d: path %s", self.core.flips, self.core.path)
            self._send(rules)

    def _send(self, rules: List[Rule]) -> None:
        for rule in rules:
            dp = self.datapaths[rule.dpid]
            dp.send_msg(ofmsgs.flow_add(dp, PRIORITY, ofmsgs.in_port_match(dp, rule.in_port),
                                        [ofmsgs.output(dp, rule.out_port)],
                                        cookie=PATHFLIP_COOKIE))
