"""What one run of the control-path-migration benchmark measured, from its raw samples (pure).

Definitions (issue 6, after the paper):
- a request is lost when no reply came within LOST_AFTER_S (1 s);
- the achieved rate is the requests answered in time per second of sending (first request to
  last, plus one gap: a generator that cannot keep up takes longer than the run); a rate counts
  only if it is at least 95 % of the offered one;
- affected requests are those from the last request the initial instance handled to the first
  reply from the target: the first request the proxy routed to the target is that reply's
  request (the target flushes its buffer in order), so the affected ones are the last one the
  initial got and those sent after it until that reply arrived;
- the peak latency is the run's maximum, averaged over runs by the caller.
"""
from __future__ import annotations

import statistics
from typing import Any, Dict, List, Optional, Sequence

LOST_AFTER_S = 1.0
ACHIEVED_SHARE = 0.95


def summarize_run(rate: float, seconds: float, sent: Sequence[float],
                  latency_ms: Sequence[Optional[float]],
                  first_to_target: Optional[int] = None,
                  last_to_initial: Optional[int] = None) -> Dict[str, Any]:
    """`sent`: each request's send time (s from the run's start); `latency_ms`: its reply's
    latency or None; `first_to_target`: the index of the first request the target got;
    `last_to_initial`: of the last one the initial got (default: the one before)."""
    answered = [x for x in latency_ms if x is not None and x <= LOST_AFTER_S * 1000.0]
    lost = len(latency_ms) - len(answered)
    span = (sent[-1] - sent[0] + 1.0 / rate) if sent and rate > 0 else seconds
    achieved = len(answered) / span if span > 0 else 0.0
    out: Dict[str, Any] = {
        "offered_rate": rate, "requests": len(latency_ms), "lost": lost,
        "achieved_rate": round(achieved, 2), "send_span_s": round(span, 4),
        "rate_held": achieved >= ACHIEVED_SHARE * rate,
        "median_ms": _r(statistics.median(answered)) if answered else None,
        "p99_ms": _r(_pct(sorted(answered), 99)) if answered else None,
        "peak_ms": _r(max(answered)) if answered else None,
        "affected": None, "affected_pct": None,
    }
    if first_to_target is not None and 0 <= first_to_target < len(sent):
        lat = latency_ms[first_to_target]
        until = sent[first_to_target] + (lat / 1000.0 if lat is not None else LOST_AFTER_S)
        start = first_to_target - 1 if last_to_initial is None else last_to_initial
        start = max(0, min(start, first_to_target))
        affected = sum(1 for t in sent[start:] if t <= until)
        out["affected"] = affected
        out["affected_pct"] = _r(100.0 * affected / len(sent), 4)
    return out


def aggregate(runs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Over the runs of one (rate, setting): lost in all, every run's rate held, mean peak,
    mean affected share, median of the run medians."""
    def mean(key: str) -> Optional[float]:
        xs = [r[key] for r in runs if r.get(key) is not None]
        return _r(statistics.fmean(xs), 4) if xs else None

    medians = [r["median_ms"] for r in runs if r.get("median_ms") is not None]
    return {"runs": len(runs), "lost_total": sum(r["lost"] for r in runs),
            "rate_held_all": all(r["rate_held"] for r in runs),
            "peak_ms_mean": mean("peak_ms"), "affected_mean": mean("affected"),
            "affected_pct_mean": mean("affected_pct"),
            "median_ms": _r(statistics.median(medians)) if medians else None}


def max_rate_zero_loss(by_rate: Dict[float, Dict[str, Any]]) -> Optional[float]:
    """The highest offered rate up to which every rate lost nothing and held its rate."""
    best = None
    for rate in sorted(by_rate):
        agg = by_rate[rate]
        if agg["lost_total"] or not agg["rate_held_all"]:
            break
        best = rate
    return best


def series(sent: Sequence[float], latency_ms: Sequence[Optional[float]],
           bucket_s: float = 0.1) -> List[List[Optional[float]]]:
    """[bucket start s, max latency ms in it (None: all lost), requests] for a Fig. 5 plot."""
    buckets: Dict[int, List[Optional[float]]] = {}
    for t, lat in zip(sent, latency_ms):
        buckets.setdefault(int(t / bucket_s), []).append(lat)
    out = []
    for b in sorted(buckets):
        vals = [x for x in buckets[b] if x is not None]
        out.append([_r(b * bucket_s), _r(max(vals)) if vals else None, len(buckets[b])])
    return out


def _pct(xs: Sequence[float], pct: float) -> float:
    k = (len(xs) - 1) * pct / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)
