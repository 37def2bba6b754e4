"""The configurations of the Meta-Migration experiment (paper sec. IV), as plain data. No I/O.

Three candidates c2, c3, c4 and the initial master c1. A configuration fixes the imposed load on
each candidate (c1 is never loaded), whom the migration goes to, the committing point, the
transfer mode, and whether glitches are injected. Figures name configurations through tags
(panel, line label); a configuration several figures share (e.g. Meta-Migration with 3 candidates
all at 75 % is in Fig. 6(a), 8(a) and 10(a)) is run once.

  Fig. 6   per load pair (low/high) 50/75 and 10/90: Fixed toward the low-load candidate, the
           high-load one, a uniformly random one of the three (loads 1 low, 2 high), and Meta with
           3 candidates for 0..3 low-load candidates.
  Fig. 8   all candidates at 75 %, then at 50 %: 1, 2, 3 candidates.
  Fig. 10  the same loads, 3 candidates, committing at the end of phase 1 vs phase 2.
  Fig. 9 / Table I  no imposed load, no glitches, 1..3 candidates, each run followed by an idle
           window of the same length (no migration); copy transfer, and shared (beyond the paper).
  headline Fixed toward the low-load candidate (10 %) with no glitches.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional, Sequence, Tuple

CANDIDATES = ("c2", "c3", "c4")
INITIAL = "c1"
CONTROLLERS = (INITIAL,) + CANDIDATES
LOAD_PAIRS = ((0.50, 0.75), (0.10, 0.90))  # Fig. 6 (a), (b)
EQUAL_LOADS = (0.75, 0.50)                # Fig. 8 / 10 (a), (b)

Tag = Tuple[str, str]  # (panel, line label)


@dataclass(frozen=True)
class Config:
    name: str
    loads: Tuple[float, float, float]       # imposed on c2, c3, c4
    candidates: Tuple[str, ...]             # the candidates (the pool, if pick_random)
    pick_random: bool = False               # Fixed toward one uniformly random of `candidates`
    commit: str = "phase2"
    transfer: str = "copy"
    glitches: bool = True
    idle_windows: bool = False              # measure a no-migration window after each run
    tags: Tuple[Tag, ...] = field(default=(), compare=False)

    @property
    def key(self) -> tuple:
        return (self.loads, self.candidates, self.pick_random, self.commit, self.transfer,
                self.glitches, self.idle_windows)

    @property
    def k(self) -> int:
        return 1 if self.pick_random else len(self.candidates)

    def load_of(self, cand: str) -> float:
        return self.loads[CANDIDATES.index(cand)]


def _pct(x: float) -> str:
    return f"{round(x * 100)}"


def pair_label(low: float, high: float) -> str:
    return f"{_pct(low)}/{_pct(high)}"


# Names the headline reads (kept in one place).
HEAD_PAIR = pair_label(*LOAD_PAIRS[1])
HEAD_META = f"meta3 {HEAD_PAIR} 1L2H"
HEAD_FIXED_LOW = f"fixed-low {HEAD_PAIR}"
HEAD_FIXED_RANDOM = f"fixed-random {HEAD_PAIR}"
HEAD_CLEAN = f"fixed-low-clean {HEAD_PAIR}"


def overhead_name(transfer: str, k: int) -> str:
    return f"overhead {transfer} k{k}"


def build() -> List[Config]:
    """Every configuration, deduplicated, in run order."""
    out: List[Config] = []
    for low, high in LOAD_PAIRS:
        pair = pair_label(low, high)
        panel = f"Fig. 6{'ab'[LOAD_PAIRS.index((low, high))]}: {_pct(low)}% low, {_pct(high)}% high"
        mixed = (low, high, high)
        out += [
            Config(f"fixed-low {pair}", mixed, ("c2",), tags=((panel, "Fixed low"),)),
            Config(f"fixed-high {pair}", mixed, ("c3",), tags=((panel, "Fixed high"),)),
            Config(f"fixed-random {pair}", mixed, CANDIDATES, pick_random=True,
                   tags=((panel, "Fixed random"),)),
        ]
        for nlow in range(4):
            loads = tuple([low] * nlow + [high] * (3 - nlow))
            out.append(Config(f"meta3 {pair} {nlow}L{3 - nlow}H", loads, CANDIDATES,  # type: ignore[arg-type]
                              tags=((panel, f"Meta {nlow}L/{3 - nlow}H"),)))
    for i, load in enumerate(EQUAL_LOADS):
        same = (load, load, load)
        fig8 = f"Fig. 8{'ab'[i]}: all candidates {_pct(load)}%"
        fig10 = f"Fig. 10{'ab'[i]}: all candidates {_pct(load)}%"
        for k in (1, 2, 3):
            tags: Tuple[Tag, ...] = ((fig8, f"{k} candidate{'s' if k > 1 else ''}"),)
            if k == 1:
                tags += ((fig10, "Fixed"),)
            if k == 3:
                tags += ((fig10, "Meta, phase-2 commit"),)
            out.append(Config(f"k{k} all{_pct(load)}", same, CANDIDATES[:k], tags=tags))
        out.append(Config(f"meta3-phase1 all{_pct(load)}", same, CANDIDATES, commit="phase1",
                          tags=((fig10, "Meta, phase-1 commit"),)))
    for transfer in ("copy", "shared"):
        for k in (1, 2, 3):
            out.append(Config(overhead_name(transfer, k), (0.0, 0.0, 0.0), CANDIDATES[:k],
                              transfer=transfer, glitches=False, idle_windows=True,
                              tags=(("Fig. 9 / Table I", f"{transfer} k={k}"),)))
    out.append(Config(HEAD_CLEAN, (LOAD_PAIRS[1][0],) + (LOAD_PAIRS[1][1],) * 2, ("c2",),
                      glitches=False, tags=(("headline", "Fixed low, no glitches"),)))
    return dedupe(out)


def dedupe(configs: Sequence[Config]) -> List[Config]:
    """One configuration per parameter set: the first name is kept, the tags are merged."""
    by_key: Dict[tuple, Config] = {}
    for c in configs:
        have = by_key.get(c.key)
        by_key[c.key] = c if have is None else replace(have, tags=have.tags + c.tags)
    return list(by_key.values())


def panels(configs: Sequence[Config]) -> Dict[str, Dict[str, str]]:
    """panel -> {line label: configuration name}, in first-seen order."""
    out: Dict[str, Dict[str, str]] = {}
    for c in configs:
        for panel, label in c.tags:
            out.setdefault(panel, {})[label] = c.name
    return out


def select(configs: Sequence[Config], names: Optional[Sequence[str]]) -> List[Config]:
    """The configurations whose name contains one of `names` (all if none given)."""
    if not names:
        return list(configs)
    return [c for c in configs if any(n in c.name for n in names)]
