"""The demo's LIME step: s3 moved onto s3p while h1 pings h2 every 1 ms, by LIME (clone, then
retire) and by freeze-and-copy, then the three-switch ensemble with its hosts moved. Prints
the pings each lost and draws them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from sdnmig import lime_lab


def lime_tour(out_dir: Path) -> Dict[str, Any]:
    print("[1/3] LimeTopo: h1 pings h2 every 1 ms while LIME clones s3 onto s3p, then retires s3")
    lime = lime_lab.loss_run("lime")
    print(f"      {lime['sent']} pings, {lime['lost']} lost, {lime['dup']} duplicated; clone and "
          f"retire took {lime['steps_ms'][0]:.0f} + {lime['steps_ms'][1]:.0f} ms")
    print("[2/3] the same move by freeze-and-copy (s3 stops, its rules go to s3p, links move)")
    freeze = lime_lab.loss_run("freeze")
    print(f"      {freeze['sent']} pings, {freeze['lost']} lost, {freeze['dup']} duplicated; "
          f"{freeze['op_ms']:.0f} ms")
    print("[3/3] ensemble: s1, s2, s3 cloned onto their spares as one operation, four hosts "
          "moved one by one (make before break), old switches retired, pings every 1 ms")
    ens = lime_lab.ensemble_run()
    print(f"      clone: {ens['clone']['lost']} of {ens['clone']['sent']} pings lost; host moves "
          f"lost {[m['lost'] for m in ens['moves']]}; retire: {ens['retire']['lost']} of "
          f"{ens['retire']['sent']} lost; {ens['duration_ms']:.0f} ms in all")
    _plot(lime, freeze, ens, out_dir / "demo_lime.png")
    ok = (lime["lost"] == lime["dup"] == 0 and ens["clone"]["lost"] == ens["retire"]["lost"] == 0
          and all(m["lost"] <= 1 for m in ens["moves"]))
    return {"ok": ok, "lime": lime, "freeze": freeze, "ensemble": ens}


def _plot(lime: Dict[str, Any], freeze: Dict[str, Any], ens: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = {"LIME s3": lime["lost"], "freeze s3": freeze["lost"],
            "ensemble clone": ens["clone"]["lost"], "ensemble retire": ens["retire"]["lost"],
            **{f"move {m['host']}": m["lost"] for m in ens["moves"]}}
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.bar(list(bars), list(bars.values()))
    ax.set_ylabel("pings lost (1 ms pings)")
    ax.set_title("LIME: pings lost per migration step")
    ax.tick_params(axis="x", labelsize=7, rotation=30)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")
