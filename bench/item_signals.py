"""How well behavioural item signals rank items by their true quality, on worlds the generalization bench kept.

    .venv/bin/python bench/item_signals.py [--out $HERMES_HOME/bench/generalization]   (after make bench-generalization)

The judge's "item quality" gap (issue #20) is the open rate lost by showing worse items of the same categories.
The model can only rank items on what behaviour shows of them. For every kept world (<variant>-<seed>-<days>d under
--out) this prints, over the items on sale at the plan's send day, the Spearman correlation within each category
(averaged over categories) between the world's true item score (quality and price attractiveness under its own
coefficients) and:

- `fav_rate`: the model's `i_fav_rate`, (favourites in 7 d + 1) / (views in 7 d + 10);
- `eng_rate`: favourites, carts and chats per view, the same prior;
- `fav_eb`, `eng_eb`: the same rates shrunk by 10 pseudo-views toward the market's own rate that week
  (empirical Bayes: no constant that belongs to one market; tried as the model's feature on 2026-12-05 and not
  kept: docs/generalization.md, "Where the first night's estimates miss");
- `views`: log views in 7 d;
- `model:<scene>`: the plan's item-level estimate (plan/item_scores, the shortlist's ranking) per scene.

Diagnostics only: nothing here feeds the platform. Held-out rows are marked `*`; look at them last.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PSEUDO_VIEWS = 10.0
WINDOW_DAYS = 7
ENGAGEMENTS = ("fav", "cart", "chat")


def _within_category(score, truth, category) -> float:
    import numpy as np
    import pandas as pd

    d = pd.DataFrame({"s": score, "q": truth, "c": category}).dropna()
    rho = [g["s"].rank().corr(g["q"].rank()) for _, g in d.groupby("c") if len(g) > 5 and g["s"].nunique() > 1]
    return float(np.mean(rho)) if rho else float("nan")


def signals(world: Path) -> dict:
    """{signal: within-category Spearman with the true item score} for one kept world."""
    import numpy as np
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.dataset as pds

    from lab.simulator.ground_truth import GroundTruth

    wh = world / "warehouse"
    ds = max(p.name.removeprefix("ds=") for p in (wh / "plan" / "windows").glob("ds=*"))
    send_day = date.fromisoformat(ds) + timedelta(days=1)
    gt = GroundTruth.load(wh / "raw" / "_ground_truth")
    start_us = int(pd.Timestamp(send_day, tz="UTC").value // 1000)
    live = np.flatnonzero((gt.item_listed_at <= start_us) & (gt.item_end_at > start_us))
    ids = live + 1                                                   # the simulator's item ids are 1-based
    truth = pd.Series(gt.item_appeal(live), index=ids)
    category = pd.Series(gt.item_category[live], index=ids)
    first = (send_day - timedelta(days=WINDOW_DAYS)).isoformat()
    ev = pds.dataset(wh / "raw" / "events", partitioning="hive")
    t = ev.to_table(columns=["item_id", "event_type"],
                    filter=(pc.field("ds") >= first) & (pc.field("ds") <= ds) & pc.field("item_id").is_valid())
    counts = (t.to_pandas().groupby(["item_id", "event_type"]).size().unstack(fill_value=0)
              .reindex(columns=["view", *ENGAGEMENTS], fill_value=0))
    market_views = max(float(counts["view"].sum()), 1.0)
    c = counts.reindex(ids).fillna(0)
    views, favs, eng = c["view"], c["fav"], c[list(ENGAGEMENTS)].sum(axis=1)
    fav_mean, eng_mean = counts["fav"].sum() / market_views, counts[list(ENGAGEMENTS)].sum().sum() / market_views
    out = {
        "fav_rate": (favs + 1) / (views + PSEUDO_VIEWS),
        "eng_rate": (eng + 1) / (views + PSEUDO_VIEWS),
        "fav_eb": (favs + PSEUDO_VIEWS * fav_mean) / (views + PSEUDO_VIEWS),
        "eng_eb": (eng + PSEUDO_VIEWS * eng_mean) / (views + PSEUDO_VIEWS),
        "views": np.log1p(views),
    }
    rho = {k: _within_category(v, truth, category) for k, v in out.items()}
    scores = wh / "plan" / "item_scores" / f"ds={ds}"
    if scores.exists():
        s = pds.dataset(scores).to_table(columns=["scene_id", "item_id", "item_score"]).to_pandas()
        for scene, g in s.groupby("scene_id"):
            g = g.set_index("item_id")["item_score"]
            if len(g) > 50:
                rho[f"model:{scene}"] = _within_category(g, truth.reindex(g.index), category.reindex(g.index))
    return {"live_items": int(len(live)), "spearman": rho}


def main(argv=None) -> None:
    from core.settings import Settings
    from lab.simulator.variants import HELD_OUT_SEED_FROM, HELD_OUT_VARIANTS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help="default $HERMES_HOME/bench/generalization")
    a = p.parse_args(argv)
    out = a.out or Settings.from_env().home / "bench" / "generalization"
    worlds = sorted(d for d in out.glob("*-*-*d") if (d / "warehouse" / "plan" / "windows").exists())
    if not worlds:
        raise SystemExit(f"no kept worlds under {out}: run `make bench-generalization` (or bench/generalization.py "
                         "--out ...) first")
    rows = {}
    for w in worlds:
        variant, seed = w.name.rsplit("-", 2)[0], int(w.name.rsplit("-", 2)[1])
        held = variant in HELD_OUT_VARIANTS or seed >= HELD_OUT_SEED_FROM
        r = signals(w)
        rows[w.name] = {**r, "held_out": held}
        print(f"{w.name + ('*' if held else ''):<26} {r['live_items']:>6} live  "
              + "  ".join(f"{k} {v:+.3f}" for k, v in r["spearman"].items()), flush=True)
    (out / "item_signals.json").write_text(json.dumps(rows, indent=1))
    print(f"written {out / 'item_signals.json'}")


if __name__ == "__main__":
    main()
