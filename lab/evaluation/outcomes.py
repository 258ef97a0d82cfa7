"""What users do with the pushes an arm delivered: opens and clicks drawn from the simulator's ground truth
with common random numbers, written back as the arm's push_log and events."""
from __future__ import annotations

from datetime import date, timedelta

import numpy as np

from core.warehouse import Warehouse
from lab.evaluation.arms import ALL_ARMS, US_PER_DAY, US_PER_HOUR, Arm, EvalSpec


def read_receipts(wh: Warehouse, send_day: str):
    import pyarrow.parquet as pq

    # a plan's hours 24-35 go out on the next UTC day: their receipts are in that day's partition
    nxt = (date.fromisoformat(send_day) + timedelta(days=1)).isoformat()
    files = sorted((f for d in (send_day, nxt) if wh.raw_partition("push_log", d).exists()
                    for f in wh.raw_partition("push_log", d).glob(f"receipts-{send_day}-h*.parquet")),
                   key=lambda f: f.name)
    return files, [pq.read_table(f) for f in files]


def _recent_pushes(wh: Warehouse, send_day: str) -> tuple[np.ndarray, np.ndarray]:
    """user_id, sent_at (us) of the arm's pushes in the 8 days before send_day (for the true fatigue terms)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    first = (date.fromisoformat(send_day) - timedelta(days=8)).isoformat()
    if not wh.raw("push_log").exists():         # a fresh deployment: no push history at all yet
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ds = pads.dataset(str(wh.raw("push_log")), format="parquet", partitioning="hive")
    t = ds.to_table(columns=["user_id", "sent_at"], filter=(pc.field("ds") >= first) & (pc.field("ds") < send_day))
    return t["user_id"].to_numpy(), t["sent_at"].cast("int64").to_numpy()


def _count_before(users, at, hist_users, hist_at, window_us) -> np.ndarray:
    """Per push: the user's pushes in [at - window, at) from history."""
    import pandas as pd

    h = pd.DataFrame({"user_id": hist_users, "t": hist_at}).sort_values(["user_id", "t"])
    out = np.zeros(len(users), dtype=np.int64)
    groups = {u: g["t"].to_numpy() for u, g in h.groupby("user_id")}
    for i, (u, a) in enumerate(zip(users, at)):
        ts = groups.get(u)
        if ts is not None:
            out[i] = np.searchsorted(ts, a, "left") - np.searchsorted(ts, a - window_us, "left")
    return out


def crn(seed: int, send_day: str, purpose: int) -> np.random.Generator:
    """Common random numbers: one stream per (seed, day, purpose), indexed by user — the same in both arms."""
    day = (date.fromisoformat(send_day) - date(1970, 1, 1)).days
    return np.random.default_rng([seed, 9001, day, purpose])


def draw_outcomes(arm: Arm, send_day: str, spec: EvalSpec) -> dict:
    """Opens and clicks of the day's acknowledged pushes from the ground truth; the receipts in push_log get
    them (what the app's open tracking would report) and the opens become app_open / view events."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from core.contract import RAW_SCHEMAS
    from lab.simulator.ground_truth import GroundTruth, push_context
    from lab.simulator.market import _events, events_table

    wh = arm.wh
    files, tables = read_receipts(wh, send_day)
    if not tables:
        return {"sent": 0, "opened": 0, "clicked": 0}
    t = pa.concat_tables(tables)
    truth = GroundTruth.load(wh.ground_truth)
    users = t["user_id"].to_numpy()
    sent_at = t["sent_at"].cast("int64").to_numpy()
    feeds = t["item_ids"]
    items = np.asarray(pa.concat_arrays([c.flatten() for c in feeds.chunks]).to_numpy(), dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(pc.list_value_length(feeds).to_numpy())]).astype(np.int64)
    hu, ht = _recent_pushes(wh, send_day)
    p24 = _count_before(users, sent_at, hu, ht, 24 * US_PER_HOUR)
    p7 = _count_before(users, sent_at, hu, ht, 7 * US_PER_DAY)
    scenes = t["scene_id"].to_numpy(zero_copy_only=False)
    ctx = push_context(wh.root, users, offsets, items, sent_at)
    p = truth.open_probability(users, scenes, offsets, items, sent_at, pushes_24h=p24, pushes_7d=p7, context=ctx)
    n_users = len(truth.user_tz)
    idx = truth.user_index(users)
    u_open = crn(spec.seed, send_day, 1).random(n_users)[idx]
    delay_s = np.minimum(crn(spec.seed, send_day, 2).exponential(25 * 60, n_users)[idx], 6 * 3600)
    opened = u_open < p
    opened_at = np.where(opened, sent_at + (delay_s * 1e6).astype(np.int64), -1)
    click_rng = np.random.default_rng([spec.seed, 9002, ALL_ARMS.index(arm.name), int(send_day.replace("-", ""))])
    clicked = truth.draw_clicks(click_rng, users, offsets, items, sent_at, opened)

    # receipts: the same rows with their outcome, each hour's file rewritten whole
    start = 0
    for f, part in zip(files, tables):
        n = part.num_rows
        o = opened_at[start:start + n]
        c = clicked[start:start + n]
        cols = {name: part[name] for name in part.column_names}
        cols["opened_at"] = pa.array(o, pa.int64(), mask=o < 0).cast(pa.timestamp("us", tz="UTC"))
        cols["clicked_item_id"] = pa.array(c, pa.int64(), mask=c < 0)
        tmp = f.with_name(f".{f.name}.tmp")
        pq.write_table(pa.table(cols).cast(RAW_SCHEMAS["push_log"]), tmp)
        tmp.replace(f)
        start += n
    # the opens as events, in the partition of the day they happen on (an open can spill past midnight)
    o, c = opened, clicked >= 0
    item_ids = wh.raw("items")
    meta = pq.read_table(item_ids, columns=["item_id", "seller_id", "category_id"]).to_pandas().set_index("item_id")
    ck = clicked[c]
    chunks = [_events(opened_at[o], users[o], "app_open"),
              _events(opened_at[c] + 5_000_000, users[c], "view", ck, meta.loc[ck, "seller_id"].to_numpy(),
                      meta.loc[ck, "category_id"].to_numpy())]
    ev = events_table(chunks)
    days = pc.strftime(ev["ts"], format="%Y-%m-%d")
    for day in sorted(set(days.to_pylist())):
        part = ev.filter(pc.equal(days, day))
        folder = wh.raw_partition("events", day)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".push-responses-{send_day}.tmp"
        pq.write_table(part, tmp)
        tmp.replace(folder / f"push-responses-{send_day}.parquet")
    return {"sent": int(len(users)), "opened": int(opened.sum()), "clicked": int(c.sum()),
            "expected_opens": float(p.sum())}


