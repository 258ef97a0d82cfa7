"""The streaming trigger engine: events from the live stream to pushes at the gateway in seconds, each one decided by
the @champion model against the user's daily budget.

    hermes stream                 (long-running; infra/stream.sh starts it with the event API, by PID)

Loop (every `stream.poll_ms` when idle, at once while events wait):
1. Read the next events of the stream (delivery/stream.py) after the engine's offset and apply them to the rule
   state (features/stream_rules.py): per-item favourites/carts, follows, per-item viewers, pending timers. Nothing
   is rescanned: each event touches the keys it names.
2. Decide every candidate that fell due (delay 0: at once; delays, chat waits: their timer), once per trigger key
   (the same key the 15-minute micro-batch uses, so the two never decide one trigger twice):
   cancelled by an `unless` exception; `stale` when due longer ago than `stream.max_lateness_minutes`; the rule's
   `if` on the nightly user features; the model's p(open) of this push at its send hour (the nightly's pair
   features from the plan day's sides + the live price, features/live_features.py; the scene effect weighed by its
   support, the version's recalibration) against what a budget slot earns (`min_p_open` of the rule or the platform;
   default the nightly plan's mean expected open rate); then the fatigue the nightly plan shares (holdout, opt-out,
   token, platform quota, the daily cap counting sent + planned + triggered pushes of the user's local day, the
   user x item gap). Quiet hours defer a push to the quiet end, spread over `stream.quiet_release_minutes`.
   Every decision, with its p(open) and reason, goes to the trigger log before anything is sent.
3. Send what is due through the delivery ledger (window `stream`, policy `trigger:<rule>`): claimed, sent, acked;
   receipts to raw/push_log every `stream.receipts_seconds` (their own file per send hour).
4. Checkpoint the rule state with its offset (one commit of its store) every `stream.checkpoint_seconds`, and
   report: events/s, lag, decisions, p50/p95 event -> gateway acceptance, in the log and in `stream_offsets.status`
   (the health check).

Crash safety: a restart opens the rule state as of its last checkpoint and replays the events after it. Candidates
it finds again are already in the trigger log (skipped); emitted ones not yet acked are sent from the ledger
(claimed keys of a dead run are in doubt and sent again: the gateway's idempotency key absorbs them). The days the
stream holds are handed to raw/ once they are over (+ `trigger_run.lateness_minutes`): `EventStream.flush_day`.
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from core.settings import Settings
from core.warehouse import Warehouse

log = logging.getLogger("hermes.stream")
US = 1_000_000
CONSUMER = "stream"
STEP_LIMIT = 5000         # events read per step
QUIET = "quiet_hours"     # the reason an emitted push carries when quiet hours held it to their end


@dataclass
class Model:
    """The @champion as the engine uses it (or a stand-in with predict_proba, in unit tests)."""
    version: str
    estimator: object
    codes: dict
    support: dict = field(default_factory=dict)      # scene -> weight of the model's scene effect
    recal: object = None

    def p_open(self, X: pd.DataFrame, interest: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(the recalibrated estimate, the model's own) of each row of live features; interest: 1 where the push's
        item is one of its user's interest (features.live_features.live_interest), for the recalibration's e."""
        from features.live_features import shrunk
        from features.scoring import NEUTRAL_SCENE, SCENE

        A = X.to_numpy(dtype=np.float64)
        p = self.estimator.predict_proba(A)[:, 1]
        B = A.copy()
        B[:, SCENE] = NEUTRAL_SCENE
        pn = self.estimator.predict_proba(B)[:, 1]
        inv = {v: k for k, v in self.codes.items()}
        w = np.array([self.support.get(inv.get(int(c)), 1.0) if self.support else 1.0 for c in A[:, SCENE]])
        q = shrunk(p, pn, w)
        if self.recal is not None:
            q = self.recal.apply(q, scenes=np.array([inv.get(int(c), "") for c in A[:, SCENE]], dtype=object),
                                 pushes=(X["u_pushes_1d"].to_numpy(np.float64), X["u_pushes_7d"].to_numpy(np.float64)),
                                 interest=interest)
        return q, p


@dataclass
class Context:
    """What the nightly gives the engine: reloaded when a newer nightly lands."""
    ds: str
    users: pd.DataFrame              # by user_id: tz, platform, opt_in, device_token
    features: pd.DataFrame           # nightly user features by user_id (the rules' `if`)
    sides: object                    # features.live_features.Sides
    model: Model
    plan_mean_p: float
    dead: set
    items: pd.DataFrame              # by item_id: seller_id, category_id, title, price (messages)


def load_context(settings: Settings, loaded, on_or_before: str) -> Context:
    """The newest nightly on or before a day: its sides, features, plan and @champion."""
    import json

    import mlflow
    import pyarrow.dataset as pads

    from features.live_features import Sides
    from jobs.score import SIDES_HOURS, SIDES_ITEM, SIDES_USER
    from jobs.windows import version_recalibration
    from training.registry import MODEL_NAME, configure_mlflow, resolve_champion

    wh = Warehouse(settings.warehouse)
    ds = wh.latest_day(SIDES_USER, on_or_before)
    if ds is None:
        raise FileNotFoundError(f"{SIDES_USER}: no partition on or before {on_or_before}: the streaming engine scores "
                                "with the nightly's plan-day sides; run the nightly (`make run`) first")
    sides = Sides.from_arrow(ds, wh.read_arrow(SIDES_USER, ds), wh.read_arrow(SIDES_ITEM, ds), wh.read_arrow(SIDES_HOURS, ds))
    configure_mlflow(settings.mlflow_tracking_uri, settings.home / "mlflow" / "artifacts")
    version, run_id = resolve_champion()
    est = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version}")
    codes = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="scene_codes.json")).read_text())
    support = {}
    rates_ds = wh.latest_day("features/material_rates", ds)
    if rates_ds:
        r = wh.read_arrow("features/material_rates", rates_ds).to_pandas()
        r = r[r["level"] == "scene"]
        if r["sends"].sum() > 0:
            k = loaded.config.platform.feed.support_sends
            support = {s: float(n) / (float(n) + k) for s, n in zip(r["scene_id"], r["sends"])}
    plan_mean = loaded.config.platform.training.prior_open_rate
    if wh.partition("plan/windows", ds).exists():
        w = wh.read_arrow("plan/windows", ds, ["policy", "slot", "p_open_model"]).to_pandas()
        w = w[(w["policy"] == loaded.config.platform.windows.policy) & (w["slot"] >= 0)]
        if len(w):
            plan_mean = float(w["p_open_model"].mean())
    users = pd.read_parquet(wh.raw("users"), columns=["user_id", "tz", "platform", "opt_in", "device_token"]).set_index("user_id")
    feats = wh.read_arrow("features/user_features", wh.latest_day("features/user_features", ds)).to_pandas().set_index("user_id")
    dead = set()
    if wh.dead_tokens.exists():
        d = pd.read_parquet(wh.dead_tokens, columns=["user_id", "token_sha256"])
        dead = set(zip(d["user_id"], d["token_sha256"]))
    items = pads.dataset(str(wh.raw("items")), format="parquet").to_table(
        columns=["item_id", "seller_id", "category_id", "title", "price"]).to_pandas().set_index("item_id")
    return Context(ds, users, feats, sides, Model(str(version), est, codes, support, version_recalibration(str(version), wh, ds)),
                   plan_mean, dead, items)


def bootstrap_rules(wh: Warehouse, rules: dict, until_us: int, items: pd.DataFrame, path: Path | None = None):
    """The rule state as of `until_us`, from the raw partitions (one read, at the engine's first start only): who
    favourited, carted, followed and viewed what within the rules' lookback, each item's seller and category (the
    snapshot) and its price as of until_us (its last listed/price_drop change before it; the snapshot's for an
    item without one), bulk
    loaded into the state store at `path` (reduced to the store's keys first, in pyarrow/pandas: no row-by-row
    Python). Items that drew their crowd already are not pushed again."""
    import pyarrow.dataset as pads

    from features.stream_rules import KIND, TIME_INDEXES, RuleState
    from features.triggers import US_DAY

    if path is not None:
        RuleState.remove(path)
    state = RuleState(rules, path=path, bulk=path is not None)
    # the time indexes are built after the load (one sort instead of a B-tree insert per row)
    for name in ("gone_ts", "interest_ts", "follows_ts", "views_ts", "first_view_ts"):
        state.db.execute(f"DROP INDEX IF EXISTS {name}")
    lookback = max([r.when.lookback_days for r in rules.values()] + [1]) * US_DAY
    # the price a drop is measured from is the item's last listed/price_drop price before it, as the batch rules
    # take it (features/triggers.py): the items snapshot holds today's price, after every drop still to be replayed.
    # The whole history, not the rules' lookback: an item listed (or last cut) long ago still has that price - with
    # only the lookback, a quiet month left every item unpriced and no drop could fire
    days = wh.raw_days("item_changes")
    first_us = int(datetime.fromisoformat(days[0]).replace(tzinfo=timezone.utc).timestamp() * US) if days else until_us
    chg = wh.read_raw_between("item_changes", "ts", min(first_us, until_us - lookback), until_us,
                              ["item_id", "ts", "change", "price"],
                              where=pads.field("change").isin(["listed", "price_drop"]))
    last = chg.sort_values("ts", kind="stable").groupby("item_id").last()
    listed = chg[chg["change"] == "listed"].groupby("item_id")["ts"].max()
    # items without a listed/price_drop change in the history (listed before it began): the snapshot's price
    unpriced = ~items.index.isin(last.index) if "price" in items else None
    state.load_items(items.index.to_numpy(), sellers=items["seller_id"].to_numpy(),
                     categories=items["category_id"].to_numpy() if "category_id" in items else None)
    if unpriced is not None and unpriced.any():
        state.load_items(items.index[unpriced].to_numpy(), prices=items["price"].to_numpy()[unpriced])
    state.load_items(last.index.to_numpy(), prices=last["price"].to_numpy(),
                     listed_at=listed.reindex(last.index).to_numpy())
    kinds = ["fav", "cart", "follow_seller"]
    ev = wh.read_raw_between("events", "ts", until_us - lookback, until_us,
                             ["ts", "user_id", "event_type", "item_id", "seller_id"],
                             where=pads.field("event_type").isin(kinds))
    fc = ev[ev["event_type"].isin(["fav", "cart"]) & ev["item_id"].notna()]
    fc = fc.assign(kind=fc["event_type"].map(KIND)).groupby(["item_id", "user_id", "kind"], as_index=False)["ts"].max()
    state.load("interest", fc[["item_id", "user_id", "kind", "ts"]].astype("int64").itertuples(index=False, name=None))
    fo = ev[(ev["event_type"] == "follow_seller") & ev["seller_id"].notna()]
    fo = fo.groupby(["seller_id", "user_id"], as_index=False)["ts"].max()
    state.load("follows", fo[["seller_id", "user_id", "ts"]].astype("int64").itertuples(index=False, name=None))
    n = {"interest": len(fc), "follows": len(fo), "views": 0}
    del ev, fc, fo
    if "selling_out" in state.by_event:
        view_days = max([r.when.lookback_days for r in state.by_event["selling_out"]] + [1]) * US_DAY
        v = wh.read_raw_between("events", "ts", until_us - view_days, until_us, ["ts", "user_id", "item_id"],
                                where=(pads.field("event_type") == "view") & pads.field("item_id").is_valid())
        v = v.astype("int64")
        vn = v.groupby(["item_id", "user_id", "ts"], as_index=False).size()
        state.load("views", vn[["item_id", "user_id", "ts", "size"]].itertuples(index=False, name=None))
        n["views"] = len(vn)
        day = v[v["ts"] >= until_us - US_DAY].groupby(["item_id", "user_id"], as_index=False)["ts"].min()
        state.load("first_view", day[["item_id", "user_id", "ts"]].itertuples(index=False, name=None))
        need = min(r.when.min_viewers for r in state.by_event["selling_out"])
        crowd = day.groupby("item_id").size()
        state.load("crowded", ((int(i),) for i in crowd.index[crowd.to_numpy() >= need]))
        del v, vn, day
    for stmt in filter(str.strip, TIME_INDEXES.split(";")):
        state.db.execute(stmt)
    state.watermark = until_us
    state._pruned_at = until_us
    log.info("stream: bootstrap loaded %s", n)
    return state


class Engine:
    def __init__(self, settings: Settings, loaded, clock=time.time, context: Context | None = None,
                 checkpoint: Path | None = None, to_wall=None, replaying: bool = False):
        from delivery.stream import EventStream
        from delivery.trigger_log import TriggerState

        self.settings, self.loaded, self.clock = settings, loaded, clock
        # the wall time of a clock time: the identity, except when a past stretch is replayed on a faster clock
        self.to_wall = to_wall or (lambda t: t)
        # a replay of history already in raw/ writes nothing back there (no receipts, no day hand-over)
        self.replaying = replaying
        self.replay_wall_start: float | None = None       # a replay's wall start (benchmarks read it from the status)
        self.cfg = loaded.config
        self.sc = self.cfg.platform.stream
        self.rules = {t.id: t for t in self.cfg.triggers if t.enabled}
        self.wh = Warehouse(settings.warehouse)
        self.stream = EventStream(settings.ledger_url)
        self.log = TriggerState(settings.ledger_url)
        # a checkpoint belongs to its state database (offsets and decisions live there)
        import hashlib

        tag = hashlib.sha256(settings.ledger_url.encode()).hexdigest()[:10]
        self.checkpoint_path = checkpoint or settings.home / "stream" / f"state-{tag}.sqlite"
        today = datetime.fromtimestamp(clock(), tz=timezone.utc).date()
        # live: the nightly of the day before; a replay of history (benchmarks) takes the newest there is
        self.ctx = context or load_context(settings, loaded, "9999-12-31" if replaying else
                                           (today - timedelta(days=1)).isoformat())
        self.offset, self.state = self._restore()
        self.history = self._budget_history()
        self.deferred: list = []                   # (send_at, key) of emitted pushes waiting for quiet hours to end
        self._restore_deferred()
        self.decided_cache: set[str] = set()
        # the latest due -> acceptance latencies (bounded: the process runs for weeks)
        self.stats = {"events": 0, "decided": {}, "latency": deque(maxlen=20_000), "sent": 0, "started": clock()}
        self._last_checkpoint = time.monotonic()          # housekeeping runs on the wall clock, even in a replay
        self._checkpointed = self.offset

    # ---- state ----------------------------------------------------------------------------------------------
    def _restore(self):
        from features.stream_rules import RuleState

        p = self.checkpoint_path
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists():
            state, doc = RuleState.open(p, self.rules)
            if doc is None:
                log.warning("stream: the rule state %s holds no checkpoint (the first start died while bootstrapping); "
                            "it is rebuilt", p)
            elif doc.get("stream") != self._stream_identity() or doc["offset"] > self.stream.head():
                log.warning("stream: the checkpoint %s belongs to another event stream (the state database was "
                            "replaced); the rule state is rebuilt", p)
            elif doc.get("rules") == sorted(self.rules):
                log.info("stream: resumed from the checkpoint at offset %d", doc["offset"])
                return doc["offset"], state
            else:
                log.warning("stream: the enabled rules changed since the checkpoint; the rule state is rebuilt")
            state.close()
            RuleState.remove(p)
        # first start: the raw partitions up to the first day the stream still holds, then the stream from its start
        first_open = self.stream.open_days("9999-12-31")
        days = [d for _, d in first_open]
        until = (datetime.fromisoformat(min(days)).replace(tzinfo=timezone.utc) if days
                 else datetime.fromtimestamp(self.clock(), tz=timezone.utc))
        t0 = time.time()
        # built beside its place without a journal, then moved in (a crash meanwhile leaves no state: rebuilt)
        building = p.with_name(p.name + ".bootstrap")
        state = bootstrap_rules(self.wh, self.rules, int(until.timestamp() * US), self.ctx.items, building)
        flushed = self._flushed_max_seq()
        state = state.moved_to(p, self._checkpoint_meta(flushed))
        _trim_heap()                    # the bootstrap's frames are garbage now: give their pages back
        log.info("stream: rule state bootstrapped from raw/ up to %s in %.1f s (%s); stream from seq %d", until.isoformat(),
                 time.time() - t0, state.size(), flushed)
        return flushed, state

    def _stream_identity(self) -> str | None:
        """The stream's first row (its event id and when it was received): a checkpoint is only valid for the stream
        it was taken on (a new state database replaying the same events has other receipt times)."""
        first = self.stream.read(0, 1)
        return f"{first[0]['event_id']}@{first[0]['received_at']!r}" if first else None

    def _flushed_max_seq(self) -> int:
        """Stream rows of days already handed to raw/ are in the bootstrap: start after the last of them."""
        import sqlalchemy as sa

        s = self.stream
        with s.engine.connect() as c:
            q = sa.select(sa.func.max(s.t.c.seq)).select_from(s.t.join(
                s.days, (s.days.c.table_name == s.t.c.table_name) & (s.days.c.day == s.t.c.day)))
            return int(c.execute(q).scalar() or 0)

    def _checkpoint_meta(self, offset: int) -> dict:
        return {"offset": offset, "rules": sorted(self.rules), "at": self.clock(), "stream": self._stream_identity()}

    def checkpoint(self) -> None:
        """The rule state's changes since the last checkpoint and the offset they reach, in one commit."""
        self.state.commit(self._checkpoint_meta(self.offset))
        self._last_checkpoint = time.monotonic()
        self._checkpointed = self.offset

    def close(self) -> None:
        """Releases the rule state (without a checkpoint: what changed since the last one is replayed next start)."""
        self.state.close()

    def _budget_history(self) -> dict:
        """What counts against each user's budget today and tomorrow: push_log, the nightly plans, triggers emitted."""
        from jobs.triggers import _sent_history

        now = int(self.clock() * US)
        users = self.ctx.users.reset_index()[["user_id", "tz"]]
        return _sent_history(self.wh, self.cfg, users, self.log, now, every_user=True)

    def _restore_deferred(self) -> None:
        """Every push an earlier run emitted (within the lateness) goes to the ledger again when due: one not acked is
        sent, an acked one is not (the ledger's claim)."""
        now = int(self.clock() * US)
        em = self.log.emitted_since(now - self.sc.max_lateness_minutes * 60 * US, engine="stream")
        for r in em.itertuples(index=False):
            heapq.heappush(self.deferred, (int(r.send_at), r.trigger_key))

    # ---- one step -------------------------------------------------------------------------------------------
    def step(self, limit: int = STEP_LIMIT) -> tuple[int, list[dict]]:
        """Read and apply the next events, decide what fell due, record it; returns (events read, messages to send)."""
        rows = self.stream.read(self.offset, limit)
        cancelled = []
        for e in rows:
            cancelled += self.state.on_event(e)
        if rows:
            self.offset = rows[-1]["seq"]
        now = int(self.clock() * US)
        due = self.state.pop_due(now)
        decisions = self.decide(due, cancelled, now)
        self.stats["events"] += len(rows)
        return len(rows), self._sendable(decisions, now)

    def decide(self, due, cancelled, now: int) -> list[dict]:
        from delivery.trigger_log import CANCELLED, EMITTED, SUPPRESSED
        from features import triggers as ft
        from features.holdout import in_holdout
        from features.live_features import live_features, live_interest
        from features.trigger_budget import after_quiet, budget_reasons, local_days

        cands = [(c, None) for c in due] + list(cancelled)
        if not cands:
            return []
        df = pd.DataFrame([{"rule_id": c.rule_id, "user_id": c.user_id, "item_id": c.item_id, "event_ts": c.event_ts,
                            "fire_at": c.fire_at, "detail": c.detail, "trigger_key": c.key, "reason": why}
                           for c, why in cands]).drop_duplicates("trigger_key")
        fresh_keys = [k for k in df["trigger_key"] if k not in self.decided_cache]
        known = self.log.decided(fresh_keys) | (set(df["trigger_key"]) - set(fresh_keys))
        df = df[~df["trigger_key"].isin(known)].copy()
        if df.empty:
            return []
        df["scene_id"] = df["rule_id"].map(lambda r: self.rules[r].then.scene)
        df["state"] = np.where(df["reason"].notna(), CANCELLED, "")
        df["p_open"] = np.nan
        df["send_at"] = np.nan
        df["local_day"] = None
        open_ = df["state"] == ""
        stale = open_ & (df["fire_at"] < now - self.sc.max_lateness_minutes * 60 * US)
        df.loc[stale, ["state", "reason"]] = [SUPPRESSED, "stale"]
        # the rule's `if` on the nightly's user features
        for rid, r in self.rules.items():
            m = (df["rule_id"] == rid) & (df["state"] == "")
            if r.condition is None or not m.any():
                continue
            ids = df.loc[m, "user_id"]
            ok = pd.Series(False, index=ids.index)
            have = ids.isin(self.ctx.features.index)
            ok[have] = ft.matches(r.condition, self.ctx.features.loc[ids[have]].reset_index()).to_numpy()
            df.loc[m & ~ok.reindex(df.index, fill_value=True), ["state", "reason"]] = [SUPPRESSED, "condition"]
        todo = df[df["state"] == ""].join(self.ctx.users, on="user_id")
        unknown = todo["tz"].isna()
        df.loc[todo.index[unknown], ["state", "reason"]] = [SUPPRESSED, "unknown_user"]
        todo = todo[~unknown].copy()
        if len(todo):
            quiet = self.cfg.platform.quiet_hours
            spread = self.sc.quiet_release_minutes * 60 * US
            send, held = [], set()
            for key, t, z in zip(todo["trigger_key"], np.maximum(todo["fire_at"].to_numpy(), now), todo["tz"]):
                s = after_quiet(int(t), z, quiet)
                if s != int(t):                                 # held by quiet hours: released over the spread
                    held.add(key)
                    s += int(int(key[:8], 16) % spread) if spread else 0
                send.append(s)
            todo["send_at"] = send
            todo["local_day"] = local_days(todo["send_at"].to_numpy(), todo["tz"].to_numpy())
            todo["local_hour"] = [datetime.fromtimestamp(s / US, tz=ZoneInfo(z)).hour
                                  for s, z in zip(todo["send_at"], todo["tz"])]
            # the model: this push, at its send hour, with the item's live price
            info = self.state.item_info(todo["item_id"])
            live = pd.DataFrame({"user_id": todo["user_id"].to_numpy(), "item_id": todo["item_id"].to_numpy(),
                                 "scene_id": todo["scene_id"].to_numpy(), "local_hour": todo["local_hour"].to_numpy(),
                                 "price_now": [_or_nan(info.get(int(i), ()), 0) for i in todo["item_id"]],
                                 "category_id": [_or_nan(info.get(int(i), ()), 1) for i in todo["item_id"]],
                                 "age_hours": [(now - t) / 3600 / US if t == t else np.nan for t in
                                               (_or_nan(info.get(int(i), ()), 2) for i in todo["item_id"])]},
                                index=todo.index)
            p, _ = self.ctx.model.p_open(live_features(live, self.ctx.sides, self.ctx.model.codes),
                                         live_interest(live, self.ctx.sides))
            todo["p_open"] = p
            df.loc[todo.index, ["p_open", "send_at", "local_day"]] = todo[["p_open", "send_at", "local_day"]].to_numpy()
            floor = todo["rule_id"].map(lambda r: self.rules[r].min_p_open or self.sc.min_p_open or self.ctx.plan_mean_p)
            low = todo["p_open"] < floor
            if low.any():
                idx = todo.index[low]
                df.loc[idx, "state"] = SUPPRESSED
                df.loc[idx, "reason"] = [f"below_value: p={p:.3f} < {f:.3f}" for p, f in
                                         zip(todo.loc[idx, "p_open"], floor[idx])]
            todo = todo[~low].copy()
            todo["held"] = in_holdout(todo["user_id"].to_numpy(), self.cfg.platform.holdout_share)
            decided = budget_reasons(todo, self.history, self.ctx.dead, self.rules, self.cfg.platform.platform_quotas,
                                     self.cfg.platform.fatigue.max_per_user_per_day)
            if decided:
                idx = [i for i, _ in decided]
                df.loc[idx, "state"] = [SUPPRESSED if why else EMITTED for _, why in decided]
                # an emitted push quiet hours hold says so (its latency counts from its release, not its event)
                df.loc[idx, "reason"] = [why or (QUIET if df.at[i, "trigger_key"] in held else None) for i, why in decided]
        decided_at = self.clock()
        rows = []
        for r in df.itertuples(index=False):
            emitted = r.state == EMITTED
            rows.append({"trigger_key": r.trigger_key, "rule_id": r.rule_id, "user_id": int(r.user_id),
                         "item_id": int(r.item_id), "scene_id": r.scene_id, "event_ts": int(r.event_ts),
                         "fire_at": int(r.fire_at), "send_at": int(r.send_at) if emitted else None,
                         "local_day": r.local_day if emitted else None, "due_window": int(r.send_at) if emitted else None,
                         "state": r.state, "reason": r.reason, "detail": r.detail, "decided_by": now,
                         "decided_at": decided_at, "p_open": None if r.p_open != r.p_open else float(r.p_open),
                         "engine": "stream"})
        self.log.record(rows)
        self.decided_cache.update(df["trigger_key"])
        if len(self.decided_cache) > 500_000:
            self.decided_cache.clear()
        for r in rows:
            self.stats["decided"][r["state"]] = self.stats["decided"].get(r["state"], 0) + 1
            if r["state"] == EMITTED:
                heapq.heappush(self.deferred, (r["send_at"], r["trigger_key"]))
            elif r["state"] == SUPPRESSED and str(r["reason"]).startswith("below_value"):
                log.debug("stream: %s suppressed: %s", r["trigger_key"][:12], r["reason"])
        return rows

    def _sendable(self, decisions: list[dict], now: int) -> list[dict]:
        """Emitted pushes whose send time has come (this step's and the ones quiet hours held), as ledger messages."""
        keys = []
        while self.deferred and self.deferred[0][0] <= now:
            keys.append(heapq.heappop(self.deferred)[1])
        if not keys:
            return []
        import sqlalchemy as sa

        t = self.log.log
        with self.log.engine.connect() as c:
            due = pd.DataFrame([dict(r._mapping) for r in c.execute(sa.select(t).where(t.c.trigger_key.in_(keys)))])
        # a push quiet hours held is checked again at its release: its item may have sold (or been removed) since,
        # and the rule's `unless` then cancels it as it would have a pending one
        gone = self.state.gone(due["item_id"], now) if len(due) else {}
        if gone:
            why = {k: gone[int(i)] for k, i, r in zip(due["trigger_key"], due["item_id"], due["rule_id"])
                   if int(i) in gone and r in self.rules and gone[int(i)] in self.rules[r].unless}
            if why:
                self.log.cancel_emitted(why)
                self._release_budget(due[due["trigger_key"].isin(why)])
                self.stats["decided"]["released_cancelled"] = self.stats["decided"].get("released_cancelled", 0) + len(why)
                log.info("stream: %d pushes held by quiet hours cancelled at their release: their item left the market "
                         "meanwhile", len(why))
                due = due[~due["trigger_key"].isin(why)]
        return self.messages(due)

    def _release_budget(self, cancelled: pd.DataFrame) -> None:
        """Pushes cancelled after they were emitted give back what they took of the budget: the user's slot of their
        local day and the user x item gap (a rebuild of the history, which reads only emitted pushes, agrees)."""
        for r in cancelled.itertuples(index=False):
            self.history["day_keys"].get((int(r.user_id), r.local_day), set()).discard(r.trigger_key)
            sent = self.history["pairs"].get((int(r.user_id), int(r.item_id)), [])
            if int(r.send_at) in sent:
                sent.remove(int(r.send_at))

    def messages(self, due: pd.DataFrame) -> list[dict]:
        from delivery.ledger import STREAM
        from delivery.messages import trigger_messages

        if due.empty:
            return []
        _, rows = trigger_messages(due, self.ctx.users, self.ctx.items, self.cfg, self.loaded.version, 0)
        quiet = dict(zip(due["trigger_key"], due["reason"].fillna("").str.startswith(QUIET)))
        for r in rows:
            # when the push was due: its event (+ delay), or the release after quiet hours
            r["due_us"] = r["send_at_us"] if quiet.get(r["idempotency_key"]) else r["fire_at_us"]
            at = datetime.fromtimestamp(r["send_at_us"] / US, tz=timezone.utc)
            r.update(window=STREAM, send_day=at.date().isoformat(), hour=at.hour, planned_at=r["send_at_us"] / US)
        return rows

    # ---- the long-running loop --------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, report_every: float = 5.0) -> None:
        from delivery.gateway import gateway_client
        from delivery.ledger import Ledger
        from delivery.ratelimit import TokenBucket
        from delivery.sender import RetryPolicy, deliver

        gw = self.cfg.platform.gateway
        ledger = Ledger(self.settings.ledger_url, lease_ttl_s=gw.lease_ttl_s)
        run_id = ledger.acquire(CONSUMER)
        client = gateway_client(self.settings.gateway_url, gw.project, self.settings.gateway_token, gw.concurrency,
                                gw.timeout_s)
        bucket = TokenBucket(gw.rate_per_second, gw.burst)
        policy = RetryPolicy.from_config(gw, ramp=False)
        sending: set[asyncio.Task] = set()
        receipts_due: set[tuple[str, int]] = set()
        last_report = last_receipts = last_beat = time.monotonic()
        window: dict = {"events": 0, "t": time.monotonic()}

        async def send(msgs: list[dict]) -> None:
            rep = await deliver(msgs, client, bucket, gw.concurrency, policy,
                                record=lambda b: ledger.record(b, run_id), claim=lambda k: ledger.claim(k, run_id),
                                max_in_doubt=gw.max_in_doubt)
            acked = ledger.acked_at([m["idempotency_key"] for m in msgs])
            self.stats["sent"] += rep.acked
            # due -> gateway acceptance (a delay-0 rule is due at its event), in wall seconds
            self.stats["latency"].extend(acked[m["idempotency_key"]] - self.to_wall(m["due_us"] / US) for m in msgs
                                         if m["idempotency_key"] in acked)

        self._report(window, time.monotonic())       # healthy from the first moment it runs
        try:
            while not stop.is_set():
                n, msgs = self.step()
                if msgs:
                    ledger.load(msgs, f"stream-{run_id}")
                    receipts_due.update((m["send_day"], m["hour"]) for m in msgs)
                    task = asyncio.create_task(send(msgs))
                    sending.add(task)
                    task.add_done_callback(sending.discard)
                now = time.monotonic()
                window["events"] += n
                if now - self._last_checkpoint >= self.sc.checkpoint_seconds and self.offset != self._checkpointed:
                    self.checkpoint()
                if now - last_beat >= 2:
                    if not ledger.heartbeat(run_id):
                        log.error("stream: lost the delivery lease (another engine took over); stopping")
                        break
                    last_beat = now
                if now - last_report >= report_every:
                    self._report(window, now)
                    last_report, window = now, {"events": 0, "t": now}
                if now - last_receipts >= self.sc.receipts_seconds and not self.replaying:
                    if receipts_due:
                        self._receipts(ledger, receipts_due)
                    self._hand_over_days(self.clock())
                    self._reload_if_newer(self.clock())
                    last_receipts = now
                # a backlog is read at once; otherwise wait a poll, so events arriving meanwhile are decided together
                # (a decision round costs ~10 ms whatever its size: one model call, one log write)
                await asyncio.sleep(0 if n >= STEP_LIMIT else self.sc.poll_ms / 1000)
        finally:
            if sending:
                await asyncio.gather(*sending, return_exceptions=True)
            self.checkpoint()
            self.close()
            if not self.replaying:
                self._receipts(ledger, receipts_due)
            self._report(window, time.monotonic())
            await client.close()
            ledger.release(run_id)
            ledger.dispose()

    def _reload_if_newer(self, now: float) -> None:
        """A newer nightly landed (its sides, plan and maybe a new @champion): score and budget with it from now on."""
        from core.config.loader import ConfigError, load_config
        from jobs.score import SIDES_USER

        try:                                      # the Configuration Center changed the rules or the platform
            loaded = load_config(self.settings.conf_dir)
        except ConfigError as e:
            log.error("stream: conf/ does not validate any more; the engine keeps config %s: %s", self.loaded.version, e)
            loaded = self.loaded
        if loaded.version != self.loaded.version:
            self.loaded, self.cfg, self.sc = loaded, loaded.config, loaded.config.platform.stream
            self.rules = {t.id: t for t in self.cfg.triggers if t.enabled}
            self.state.set_rules(self.rules)
            log.info("stream: config %s applied (%d rules enabled)", loaded.version, len(self.rules))
        yesterday = (datetime.fromtimestamp(now, tz=timezone.utc).date() - timedelta(days=1)).isoformat()
        newest = self.wh.latest_day(SIDES_USER, yesterday)
        if newest is None or newest <= self.ctx.ds:
            return
        t0 = time.time()
        self.ctx = load_context(self.settings, self.loaded, yesterday)
        self.history = self._budget_history()
        log.info("stream: the nightly of %s landed: context and budgets reloaded in %.1f s (model version %s)",
                 self.ctx.ds, time.time() - t0, self.ctx.model.version)

    def _hand_over_days(self, now: float) -> None:
        """UTC days that are over (+ trigger_run.lateness_minutes) go to raw/ for the nightly, once, and close."""
        closed_before = datetime.fromtimestamp(now - self.cfg.platform.trigger_run.lateness_minutes * 60, tz=timezone.utc)
        for table, day in self.stream.open_days(closed_before.date().isoformat()):
            out = self.stream.flush_day(self.wh, table, day)
            log.info("stream: handed %d %s rows of %s to raw/ (%s)", out["rows"], table, day, out["path"])

    def _receipts(self, ledger, hours: set) -> None:
        from jobs.deliver import write_receipts

        for day, hour in sorted(hours):
            write_receipts(self.wh, ledger, day, hour, self.settings.receipt_time, stream=True)
        hours.clear()

    def _report(self, window: dict, now: float) -> None:
        head = self.stream.head()
        lat = np.array(self.stats["latency"])
        status = {"events_per_s": round(window["events"] / max(now - window["t"], 1e-6), 1), "offset": self.offset,
                  "lag_events": head - self.offset, "decided": self.stats["decided"], "sent": self.stats["sent"],
                  "latency_p50_s": round(float(np.median(lat)), 3) if lat.size else None,
                  "latency_p95_s": round(float(np.percentile(lat, 95)), 3) if lat.size else None,
                  "timers": len(self.state.pending), "deferred": len(self.deferred), "nightly": self.ctx.ds,
                  "model_version": self.ctx.model.version, "rss_mb": _rss_mb(),
                  **({"replay_wall_start": self.replay_wall_start} if self.replay_wall_start else {})}
        self.stream.commit_offset(CONSUMER, self.offset, status)
        log.info("stream: %.1f events/s, lag %d events, decided %s, sent %d, latency p50 %s s p95 %s s, timers %d, "
                 "rss %d MB", status["events_per_s"], status["lag_events"], status["decided"], status["sent"],
                 status["latency_p50_s"], status["latency_p95_s"], status["timers"], status["rss_mb"])


def _trim_heap() -> None:
    """Return freed heap to the OS (glibc keeps it otherwise: the RSS would stay at the bootstrap's peak)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:                     # not glibc
        pass


def _or_nan(row: tuple, k: int) -> float:
    return np.nan if len(row) <= k or row[k] is None else row[k]


def _rss_mb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def health(settings: Settings, max_silence_s: float = 30.0) -> dict:
    """The engine's last report (stream_offsets): healthy when it reported within max_silence_s."""
    from delivery.stream import EventStream

    s = EventStream(settings.ledger_url)
    try:
        o = s.offset(CONSUMER)
        head = s.head()
    finally:
        s.dispose()
    if o is None:
        return {"healthy": False, "why": "the streaming engine has never run", "head": head}
    age = time.time() - o["updated_at"]
    return {"healthy": age <= max_silence_s, "seconds_since_report": round(age, 1), "offset": o["seq"], "head": head,
            "lag_events": head - o["seq"], **o["status"],
            **({} if age <= max_silence_s else {"why": f"no report for {age:.0f} s (more than {max_silence_s:.0f} s)"})}


def replay_clock(world_start: float, wall_start: float, speed: float):
    """(clock, to_wall, holder) of a replay: the clock reads world_start until the wall time holder["wall"], then runs
    `speed` times faster. wall_start <= 0: not known yet (holder["wall"] is set once the engine is ready)."""
    holder = {"wall": wall_start if wall_start > 0 else float("inf")}
    return (lambda: world_start + max(0.0, time.time() - holder["wall"]) * speed,
            lambda t: holder["wall"] + (t - world_start) / speed, holder)


def main(settings: Settings, loaded, replay: tuple[float, float, float] | None = None) -> None:
    """`hermes stream`: run until SIGTERM/SIGINT (finishes in-flight sends, checkpoints, writes receipts).
    replay: (world start, wall start, speed) — a past stretch of events replayed on a faster clock (benchmarks)."""
    import signal

    async def go():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if replay:
            clock, to_wall, holder = replay_clock(*replay)
            engine = Engine(settings, loaded, clock=clock, to_wall=to_wall, replaying=True)
            if replay[1] <= 0:          # the clock starts -wall_start seconds after the engine is ready
                holder["wall"] = time.time() - replay[1]
            engine.replay_wall_start = holder["wall"]
            log.info("stream: replay clock reads %s at wall time %.3f, x%g", datetime.fromtimestamp(
                replay[0], tz=timezone.utc).isoformat(), holder["wall"], replay[2])
        else:
            engine = Engine(settings, loaded)
        log.info("stream: started (nightly %s, model version %s, %d rules, offset %d)", engine.ctx.ds,
                 engine.ctx.model.version, len(engine.rules), engine.offset)
        await engine.run(stop)

    asyncio.run(go())
