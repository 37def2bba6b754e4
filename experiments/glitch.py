"""Glitches: a candidate controller paused (SIGSTOP ... SIGCONT) for a heavy-tailed time, once,
at a random moment while it is migrating.

The paper attributes the heavy tail of migration times to transient, local trouble (micro-bursts,
software hiccups). We inject it: for each migration, each candidate independently gets a glitch
with probability p; its length is Pareto (shape a, scale k, capped), and it starts at a uniformly
random moment between the candidate's START and its STATE_ACK.

The ack time is not known in advance, so the moment is drawn as u * W after START, where u is
uniform on [0, 1) and W the candidate's running median START->STATE_ACK duration in the current
configuration (observed on the bus in earlier runs, warm-up included; the median over all
candidates of the configuration while this one has none; a prior before anything was seen). If
the candidate's STATE_ACK is already on the bus when the moment comes, the glitch is skipped (and
recorded as skipped). Every random draw is made whether or not it is used, so the stream of random
numbers, hence each run's plan, depends only on the seed.

Pure parts (draws, plans, the window, the fire-or-skip decision) are plain functions; `Glitcher`
watches the bus (`psubscribe erc:*` through experiments/bustap.py, headers decoded with
`ryu_apps.erc.wire`) and sends the signals. The moment lands late by the watcher's own scheduling
delay on a busy machine (`late_ms` in each glitch's record).
"""
from __future__ import annotations

import os
import random
import signal
import statistics
import threading
import time
from dataclasses import asdict, dataclass

from experiments import bustap
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple


@dataclass(frozen=True)
class GlitchParams:
    probability: float = 0.1
    shape: float = 1.5
    scale_ms: float = 20.0
    cap_ms: float = 2000.0
    prior_window_ms: float = 100.0


@dataclass(frozen=True)
class Glitch:
    """A planned pause: `fraction` of the START->ACK window after START, for `duration_ms`."""

    cand: str
    fraction: float
    duration_ms: float


def pareto_ms(rng: random.Random, shape: float, scale_ms: float, cap_ms: float) -> float:
    """Pareto(shape, scale) in ms (support [scale, inf)), capped at `cap_ms`."""
    if shape <= 0 or scale_ms <= 0:
        raise ValueError("Pareto shape and scale must be positive")
    return min(scale_ms * rng.paretovariate(shape), cap_ms)


def plan(rng: random.Random, candidates: Sequence[str], params: GlitchParams) -> Dict[str, Glitch]:
    """Which candidates glitch in this migration, when and for how long (three draws each)."""
    out = {}
    for cand in candidates:
        coin, fraction = rng.random(), rng.random()
        duration = pareto_ms(rng, params.shape, params.scale_ms, params.cap_ms)
        if coin < params.probability:
            out[cand] = Glitch(cand, fraction, duration)
    return out


def window_ms(history: Mapping[str, Sequence[float]], cand: str, prior_ms: float) -> float:
    """The running median START->STATE_ACK (ms) used to place a glitch of `cand`."""
    own = list(history.get(cand, ()))
    if own:
        return float(statistics.median(own))
    pooled = [x for xs in history.values() for x in xs]
    return float(statistics.median(pooled)) if pooled else prior_ms


def should_fire(acked_at: Optional[float], fire_at: float) -> bool:
    """Pause only if the candidate had not acknowledged the state by the chosen moment."""
    return acked_at is None or acked_at > fire_at


def pause(pid: int, seconds: float, sleep: Callable[[float], None] = time.sleep) -> float:
    """SIGSTOP, wait, SIGCONT (always, even if the wait is interrupted); returns seconds paused."""
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        sleep(seconds)
    finally:
        os.kill(pid, signal.SIGCONT)
    return time.monotonic() - t0


class Glitcher:
    """Watches the bus for START and STATE_ACK; pauses armed candidates at their planned moment.

    `arm(plan, windows)` before a migration, `disarm()` after it (returns what happened to each
    planned glitch; a moment not reached by then is skipped: the migration was over first). `durations` collects START->STATE_ACK (ms) per candidate for every migration
    seen while watching, for the running medians.
    """

    def __init__(self, host: str, port: int, password: Optional[str], pids: Mapping[str, int]) -> None:
        from ryu_apps.erc import wire  # the bus's message format

        self._wire = wire
        self.pids = dict(pids)
        self._stop = threading.Event()
        # Snapshots travel on ercdata:<id>, which erc:* does not match (ryu_apps/erc/wire.py); the
        # tap reads headers only anyway, so a payload on a control channel would cost it little.
        self._tap = bustap.BusTap(host, port, password, wire.CHANNEL_PREFIX + "*", self._stop.is_set)
        self._lock = threading.Lock()
        self.starts: Dict[Tuple[str, str], float] = {}
        self.acks: Dict[Tuple[str, str], float] = {}
        self.error: Optional[BaseException] = None
        self._armed: Dict[str, Glitch] = {}
        self._windows: Dict[str, float] = {}
        self._results: Dict[str, Dict[str, Any]] = {}
        self._timers: List[threading.Thread] = []
        self._over = threading.Event()  # set by disarm: moments not reached yet are skipped
        self._thread = threading.Thread(target=self._loop, name="glitcher", daemon=True)
        self._thread.start()

    # -- the bus ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            for chan, head in self._tap.messages():
                self._seen(chan, head, time.monotonic())
        except bustap.TapClosed:
            if not self._stop.is_set():
                self.error = RuntimeError("the bus closed the watcher's connection")
        except BaseException as e:  # noqa: BLE001 -- kept and re-raised by check()/close()
            self.error = e

    def _seen(self, chan: str, head: bytes, now: float) -> None:
        try:
            msg = self._wire.decode(head)
        except self._wire.WireError:
            return
        if msg.type == self._wire.START:
            cand = chan[len(self._wire.CHANNEL_PREFIX):]
            with self._lock:
                self.starts[(msg.mig, cand)] = now
                glitch = self._armed.pop(cand, None)
            if glitch is not None:
                self._schedule(msg.mig, glitch, now)
        elif msg.type == self._wire.STATE_ACK:
            with self._lock:
                self.acks[(msg.mig, msg.src)] = now

    # -- arming -----------------------------------------------------------------------------------
    def arm(self, glitches: Mapping[str, Glitch], windows: Mapping[str, float]) -> None:
        self.check()
        with self._lock:
            self._over.clear()
            self._armed = dict(glitches)
            self._windows = dict(windows)
            self._results = {c: {**asdict(g), "window_ms": windows[c], "fired": False,
                                 "reason": "START never seen"} for c, g in glitches.items()}

    def disarm(self) -> Dict[str, Dict[str, Any]]:
        """Stop arming, wait for pauses in progress to end, return what each planned glitch did."""
        self._over.set()
        with self._lock:
            self._armed = {}
            timers, self._timers = self._timers, []
        for t in timers:
            t.join()
        self.check()
        with self._lock:
            return {c: dict(r) for c, r in self._results.items()}

    def _schedule(self, mig: str, g: Glitch, started: float) -> None:
        offset_s = g.fraction * self._windows[g.cand] / 1000.0
        t = threading.Thread(target=self._fire, args=(mig, g, started, offset_s),
                             name=f"glitch-{g.cand}", daemon=True)
        with self._lock:
            self._results[g.cand].update(mig=mig, offset_ms=round(offset_s * 1000, 3))
            self._timers.append(t)
        t.start()

    def _fire(self, mig: str, g: Glitch, started: float, offset_s: float) -> None:
        fire_at = started + offset_s
        over = self._over.wait(max(0.0, fire_at - time.monotonic()))
        with self._lock:
            acked = self.acks.get((mig, g.cand))
            result = self._results[g.cand]
        if over and should_fire(acked, fire_at):
            result.update(reason="migration over first")
            return
        if not should_fire(acked, fire_at):
            result.update(reason="STATE_ACK came first")
            return
        try:
            paused = pause(self.pids[g.cand], g.duration_ms / 1000.0)
        except ProcessLookupError:
            result.update(reason="process gone")
            return
        result.update(fired=True, reason="", paused_ms=round(paused * 1000, 3),
                      late_ms=round((time.monotonic() - paused - fire_at) * 1000, 3))

    # -- measurements -----------------------------------------------------------------------------
    def start_to_ack_ms(self, mig_of: Callable[[str], bool]) -> Dict[str, float]:
        """START->STATE_ACK per candidate, for the migrations whose id `mig_of` accepts."""
        with self._lock:
            return {cand: round((self.acks[(mig, cand)] - t) * 1000, 3)
                    for (mig, cand), t in self.starts.items()
                    if mig_of(mig) and (mig, cand) in self.acks}

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"bus watcher died: {self.error!r}") from self.error

    def close(self) -> None:
        try:
            self.disarm()
        finally:
            self._stop.set()
            self._thread.join(2.0)
            self._tap.close()
