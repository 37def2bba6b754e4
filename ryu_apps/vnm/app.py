"""Whole-network migration (Tunnel ALAP / ASAP) as a platform app over the LIME shim.

Load with the shim and the control apps, e.g. `--apps lime,vnm,pathflip` and, in `[sdnmig]`,
`events = lime`, the new network's switches in `lime_spares`, each old switch's port to the
tunnel switch in `lime_reserved` and the tunnel switch in `lime_hidden` (sdnmig.vnm_lab does it).

Commands come on `vnm:ops` of the instance's own Redis and are answered the way the shim answers
on `lime:ops` (lime_shim.client). One listener greenthread takes them one at a time, so two
operators' commands never interleave. ryu_apps.vnm.core decides what a command does; here each
step is carried out: LIME requests through the shim's own `Operations` (in this greenthread,
as the shim's listener runs them), the tunnel switch's patch as FLOW_MODs confirmed by a
barrier. The state is saved in Redis (`vnm:state`) after each command that changed it, and
read back at start: a migration survives a controller restart as far as the shim's map does.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

import redis

from lime_shim import ofconv
from lime_shim.mapping import MappingError
from ryu_apps import config, ofmsgs
from ryu_apps.kvs import StoreError, connect, serve
from ryu_apps.loud import MARKER, loud
from ryu_apps.vnm.core import (OPS_CHANNEL, STATE_KEY, Step, StepFailed, Vnm, VnmError,
                               carry_out, lime_op)
from sdnmig import compat

LOG = logging.getLogger("sdnmig.vnm")
SHIM_BRICK = "lime_shim"  # lime_shim.app.BRICK_NAME (importing it here would load it twice)
BARRIER_TIMEOUT_S = 5.0
ALL_BITS = 0xFFFFFFFFFFFFFFFF

compat.handler.register_service("lime_shim.app")  # loading this app loads the shim


class VnmApp(compat.RyuApp):
    OFP_VERSIONS = list(compat.OFPROTOS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = "vnm"
        try:
            self.cfg = config.load()
            self.redis = connect(self.cfg.redis_host, self.cfg.redis_port, self.cfg.redis_password)
        except (config.ConfigError, StoreError) as e:
            raise SystemExit(f"sdnmig: {e}") from None
        self.vnm, self.broken = self._load()
        self.waiting: Dict[Tuple[int, int], Any] = {}   # (dpid, barrier xid) -> hub.Event
        self.sent: Dict[Tuple[int, int], str] = {}      # (dpid, xid) of our FLOW_MODs -> error
        self.threads.append(compat.hub.spawn(self._listen))

    # -- the tunnel switch's answers ----------------------------------------------------------------
    @compat.set_ev_cls(compat.ofp_event.EventOFPBarrierReply, compat.MAIN_DISPATCHER)
    @loud
    def _barrier_reply(self, ev: Any) -> None:
        done = self.waiting.pop((ev.msg.datapath.id, ev.msg.xid), None)
        if done is not None:
            done.set()

    @compat.set_ev_cls(compat.ofp_event.EventOFPErrorMsg, compat.MAIN_DISPATCHER)
    @loud
    def _error(self, ev: Any) -> None:
        key = (ev.msg.datapath.id, ev.msg.xid)
        if key in self.sent:
            self.sent[key] = f"type {ev.msg.type} code {ev.msg.code}"

    # -- commands -----------------------------------------------------------------------------------
    def _listen(self) -> None:
        serve(self.redis, OPS_CHANNEL, self._command, "VNM command", LOG, compat.hub.sleep)

    def _command(self, raw: bytes) -> None:
        try:
            req = json.loads(raw)
            reply_to = req.pop("reply")
            command = req.pop("op")
        except (ValueError, KeyError, TypeError, AttributeError):
            LOG.error("vnm: malformed command %r: ignored", raw[:200])
            return
        if not isinstance(reply_to, str):
            LOG.error("vnm: command %r names no reply channel: ignored", raw[:200])
            return
        if not isinstance(command, str):
            answer: Dict[str, Any] = {"ok": False, "error": f"the command must be a name, not "
                                                            f"{command!r}"}
        else:
            answer = self.run(command, req)
        self.redis.publish(reply_to, json.dumps(answer))

    def run(self, command: str, body: Any) -> Dict[str, Any]:
        """One command, all or nothing (ryu_apps.vnm.core), and its answer."""
        started = time.monotonic()
        if self.broken is not None:
            return {"ok": False, "error": self.broken}
        try:
            steps = self.vnm.plan(command, body)
        except VnmError as e:
            return {"ok": False, "error": str(e), "state": self.vnm.to_doc()}
        times = []

        def do(step: Step) -> None:
            t = time.monotonic()
            try:
                self._do(step)
            except StepFailed:
                raise
            except Exception as e:  # a bug: loud, and the command undone like any failure
                LOG.exception("%s in VNM step %s", MARKER, step.kind)
                raise StepFailed(f"{type(e).__name__}: {e}") from e
            finally:
                times.append({"kind": step.kind, "op": lime_op(step),
                              "ms": round((time.monotonic() - t) * 1000, 1)})
        if steps:
            LOG.info("vnm: %s: %d step(s)", command, len(steps))
            try:
                self._shim()
            except StepFailed as e:
                return {"ok": False, "error": str(e), "state": self.vnm.to_doc()}
        outcome = carry_out(steps, do)
        answer: Dict[str, Any] = {"ok": outcome.happened, "steps": times}
        if outcome.happened:
            self.vnm.commit(command, body)
            warnings = list(outcome.errors)
            if steps:
                unsaved = self._save()
                warnings += [unsaved] if unsaved else []
            if warnings:
                answer["warnings"] = warnings
        elif outcome.kept:
            answer["error"] = ("; ".join(outcome.errors) + f": {', '.join(outcome.kept)} stays "
                               f"done (the rest undone): give the command again to finish")
        else:
            answer["error"] = "; ".join(outcome.errors) + ": nothing changed"
        for e in outcome.errors:
            LOG.error("vnm: %s: %s", command, e)
        answer["state"] = self.vnm.to_doc()
        answer["ms"] = round((time.monotonic() - started) * 1000, 1)
        if steps and outcome.happened:
            LOG.info("vnm: %s done in %.1f ms", command, answer["ms"])
        return answer

    def _do(self, step: Step) -> None:
        if step.kind == "lime":
            shim = self._shim()
            try:
                shim.ops.run(step.body)
            except (MappingError, ValueError, KeyError, TypeError) as e:
                raise StepFailed(f"LIME refused {step.body.get('op')}: {e}") from None
            return
        dp = self._tunnel_switch(step.body["switch"])
        if step.kind == "patch":
            msgs = [ofconv.flow_add_to(dp, rule) for rule in step.body["rules"]]
        else:
            msgs = [ofmsgs.flow_delete(dp, cookie=step.body["cookie"], cookie_mask=ALL_BITS)]
        self._send_confirmed(dp, msgs)

    def _shim(self) -> Any:
        shim = compat.app_manager.lookup_service_brick(SHIM_BRICK)
        if shim is None or not hasattr(shim, "ops"):
            raise StepFailed("the LIME shim is not running in this controller")
        return shim

    def _tunnel_switch(self, t0: int) -> Any:
        shim = self._shim()
        dp = shim.phys.get(t0)
        if dp is None:
            raise StepFailed(f"the tunnel switch {t0:#x} is not connected")
        if t0 not in shim.hidden:
            raise StepFailed(f"the tunnel switch {t0:#x} is not in lime_hidden: the shim would "
                             "treat it as a switch of its own")
        if shim.roles is None or not shim.roles.is_master(t0):
            raise StepFailed(f"this controller is not MASTER of the tunnel switch {t0:#x}")
        return dp

    def _send_confirmed(self, dp: Any, msgs: List[Any]) -> None:
        """FLOW_MODs, then a barrier: an error for any of them, or no answer, fails the step."""
        keys = []
        for msg in msgs:
            dp.set_xid(msg)
            keys.append((dp.id, msg.xid))
            self.sent[keys[-1]] = ""
        barrier = ofmsgs.barrier(dp)
        dp.set_xid(barrier)
        done = compat.hub.Event()
        self.waiting[(dp.id, barrier.xid)] = done
        try:
            for msg in msgs:
                if not dp.send_msg(msg):
                    raise StepFailed(f"{dp.id:#x}: the connection is gone")
            dp.send_msg(barrier)
            if not done.wait(timeout=BARRIER_TIMEOUT_S):
                raise StepFailed(f"{dp.id:#x} did not answer a barrier in "
                                 f"{BARRIER_TIMEOUT_S:.0f} s")
            errors = [self.sent[k] for k in keys if self.sent[k]]
            if errors:
                raise StepFailed(f"{dp.id:#x} refused {len(errors)} rule(s): {errors[0]}")
        finally:
            self.waiting.pop((dp.id, barrier.xid), None)
            for k in keys:
                self.sent.pop(k, None)

    # -- persistence --------------------------------------------------------------------------------
    def _load(self) -> Tuple[Vnm, Optional[str]]:
        try:
            raw = self.redis.get(STATE_KEY)
        except redis.RedisError as e:
            return Vnm(), f"the saved VNM state could not be read ({e}): restart when Redis is up"
        if raw is None:
            return Vnm(), None
        try:
            vnm = Vnm.from_doc(json.loads(raw))
        except (ValueError, VnmError) as e:
            msg = (f"the saved VNM state ({STATE_KEY} in this instance's Redis) is unreadable "
                   f"({e}): mend or delete it, then restart")
            LOG.error("vnm: %s", msg)
            return Vnm(), msg
        LOG.info("vnm: state of the previous run loaded: %s (%s), moved %s", vnm.state,
                 vnm.algorithm, list(vnm.moved))
        return vnm, None

    def _save(self) -> Optional[str]:
        try:
            self.redis.set(STATE_KEY, json.dumps(self.vnm.to_doc()))
        except redis.RedisError as e:
            LOG.error("vnm: state not saved: %s", e)
            return f"the state was not saved ({e}): a restart would not know of this command"
        return None
