"""What is still on sale when a push goes out.

The nightly plan is made the night before its send day, and a second-hand item is unique: once sold (or removed by
its seller) it is gone. A push that names a sold item is a broken promise, and one whose every item is gone is a
push spent on nothing (the user's daily budget, the gateway's capacity). So before a delivery run sends an hour's
messages, it drops from each feed every item whose `sold` or `removed` change is known by then:

- a feed that lost items goes out with the rest, in the plan's order, topped up from its reserves (`reserve_ids`:
  the scene's next candidates, written by the plan, best first) with those still on sale, up to its planned
  length, and is re-rendered from its first item with the template and item fields the batch carries
  (`title_template`, `body_template`, `feed`), so the title never names a sold item; the ledger records the items
  actually sent, and the receipts carry them;
- a feed left with no item and no reserve on sale is not sent: its key is filed `dead_letter`, reason
  `items_gone` (counts still add up: batch = acked + dead-lettered + pending).

"Known by then" is every change with `ts <= now` in raw/item_changes from the day before the send day (the plan's
night) to now's day — the days the stream has handed over — and in the live stream's table (the days it has not).
A deployment without the stream learns of the send day's sales only when upstream delivers the day, and sends as
planned until then. The check runs once per delivery run, before anything is claimed; only pending keys are
revised (a key left in doubt by a dead run keeps the content it may already have been sent with).
"""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

GONE = ("sold", "removed")
ITEMS_GONE = "items_gone"


def gone_items(warehouse, ledger_url: str | None, item_ids, first_day: str, now: float) -> set[int]:
    """Those of `item_ids` with a sold or removed change at or before `now` (epoch seconds), from first_day on."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    wanted = pa.array(sorted({int(i) for i in item_ids}), pa.int64())
    if not len(wanted):
        return set()
    now_us = int(now * 1_000_000)
    last_day = datetime.fromtimestamp(now, tz=timezone.utc).date()
    gone: set[int] = set()
    day = date.fromisoformat(first_day)
    while day <= last_day:
        folder = warehouse.raw_partition("item_changes", day.isoformat())
        files = sorted(str(f) for f in folder.glob("*.parquet")) if folder.is_dir() else []
        if files:
            t = pads.dataset(files, format="parquet").to_table(
                columns=["item_id", "ts", "change"],
                filter=pads.field("change").isin(list(GONE)) & pads.field("item_id").isin(wanted))
            ts_us = pc.cast(t["ts"], pa.timestamp("us", tz="UTC")).cast(pa.int64())
            gone.update(pc.filter(t["item_id"], pc.less_equal(ts_us, now_us)).to_pylist())
        day += timedelta(days=1)
    if ledger_url:
        gone.update(_gone_in_stream(ledger_url, set(wanted.to_pylist()), first_day, now_us))
    return gone


def _gone_in_stream(ledger_url: str, wanted: set[int], first_day: str, now_us: int) -> set[int]:
    """Sold or removed items the live stream has accepted and not yet handed to raw/ (its table is in the state
    database, beside the ledger; a deployment that never ran the stream has no such table)."""
    import sqlalchemy as sa

    from delivery.ledger import state_engine

    engine = state_engine(ledger_url)
    try:
        if not sa.inspect(engine).has_table("stream_events"):
            return set()
        q = sa.text("SELECT DISTINCT item_id FROM stream_events WHERE table_name = 'item_changes' "
                    "AND kind IN :kinds AND day >= :d AND ts <= :t").bindparams(sa.bindparam("kinds", expanding=True))
        with engine.connect() as c:
            rows = c.execute(q, {"kinds": list(GONE), "d": first_day, "t": now_us}).scalars()
            return {int(i) for i in rows if i in wanted}
    finally:
        engine.dispose()


def prune(rows: list[dict], gone: set[int], max_per_category: int | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """Split messages against the gone items: (to send, withdrawn, revised — the revised are among those to send).
    A revised message keeps its remaining items in order, then takes its `reserve_ids` still on sale, best first,
    in place of those it lost (up to its planned length; `refilled` counts them) and, when it carries its template
    and item fields, is re-rendered from its first item. With `max_per_category` and the items' categories (the
    message's `feed`), a reserve is taken only while the feed keeps at most that many items of its category (the
    plan's diversity rule, features/selection.py: a reserve may be a category's next item past the cap, to stand in
    for a sold item of its own category). A withdrawn message lost every item and had no reserve left. Messages
    are changed in place; none is dropped silently."""
    from delivery.messages import render, template_fields

    keep, withdrawn, revised = [], [], []
    for m in rows:
        items = [int(i) for i in m.get("item_ids") or []]
        live = [i for i in items if i not in gone]
        if len(live) == len(items):
            keep.append(m)
            continue
        reserves = [int(i) for i in m.get("reserve_ids") or []]
        feed = _feed(m)
        categories = {int(i): f["category_id"] for i, f in feed.items() if f.get("category_id") is not None}
        fill = _refill(live, [i for i in reserves if i not in gone and i not in live], len(items) - len(live),
                       categories, max_per_category)
        if not live and not fill:
            m["withdrawn_reason"] = (f"{ITEMS_GONE}: all {len(items)} item(s) of the feed"
                                     f"{f' and its {len(reserves)} reserve(s)' if reserves else ''} were sold or "
                                     f"removed before the send")
            withdrawn.append(m)
            continue
        m["item_ids"], m["refilled"] = live + fill, len(fill)
        sent = m["item_ids"]
        if m.get("title_template") and feed.get(sent[0]) is not None:
            fields = template_fields(feed[sent[0]], len(sent))
            m["title"], m["body"] = render(m["title_template"], fields), render(m["body_template"], fields)
        revised.append(m)
        keep.append(m)
    return keep, withdrawn, revised


def _feed(m: dict) -> dict:
    """The message's item fields (`feed`: its items and reserves) by item id."""
    feed = m.get("feed")
    return {f["item_id"]: f for f in (feed.as_py() if hasattr(feed, "as_py") else feed) or []}


def _refill(live: list[int], candidates: list[int], slots: int, categories: dict[int, int] | None,
            cap: int | None) -> list[int]:
    """Up to `slots` of the candidates, best first; with categories and a cap, only those that keep the feed (live +
    taken) within `cap` items of their category (an item of unknown category is taken as before: nothing to hold
    it to)."""
    if not categories or not cap:
        return candidates[:slots]
    count: dict[int, int] = {}
    for i in live:
        if i in categories:
            count[categories[i]] = count.get(categories[i], 0) + 1
    fill = []
    for i in candidates:
        if len(fill) == slots:
            break
        c = categories.get(i)
        if c is not None and count.get(c, 0) >= cap:
            continue
        fill.append(i)
        if c is not None:
            count[c] = count.get(c, 0) + 1
    return fill
