"""The Configuration Center's schema: scenes, fatigue, quiet hours, platform quotas, gateway limits.

Pydantic models with `extra="forbid"`: a misspelt key is an error, not a silent default. Cross-field
rules (audience expressions, template placeholders, unique ids) are checked here too.
"""
from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.config.rules import RuleError, parse_rule
from core.contract import PLATFORMS, RAW_TABLES

TRIGGERS = ("scheduled", "personalised_time", "real_time")
# Where a scene's materials come from (recall); each is implemented by the candidate stage.
MATERIAL_SOURCES = (
    "favourited_price_drop",   # items the user favourited or carted whose price dropped
    "followed_seller_new",     # new listings from sellers the user follows
    "top_category_new",        # fresh listings in the user's top categories ("guess you like")
    "viewed_selling_out",      # items the user viewed repeatedly that many others are looking at
    "chat_waiting",            # the user's own listings with chats waiting for a reply
    "own_listing_stats",       # the user's own listings that got views / favourites
    "popular_in_category",     # popular items in the user's top categories (reactivation)
    "similar_to_bought",       # items in the categories of what the user bought
    "hot_items",               # the globally most attractive items on sale (Push 1.0's material)
)
TEMPLATE_FIELDS = {"item_title", "item_price", "old_price", "drop_pct", "category", "n_items", "n_more", "seller_id"}
SCENE_ID = re.compile(r"^[a-z][a-z0-9_]{2,40}$")


def _check_id(value: str, kind: str) -> str:
    if not SCENE_ID.match(value):
        raise ValueError(f"{kind} id must be lower_snake_case, 3-41 characters, starting with a letter")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Materials(_Strict):
    source: Literal[MATERIAL_SOURCES]  # type: ignore[valid-type]
    lookback_days: int = Field(7, ge=1, le=28)
    min_drop_pct: float = Field(0.0, ge=0, le=90)
    max_candidates: int = Field(50, ge=1, le=500)


class Template(_Strict):
    title: str = Field(min_length=1, max_length=60)
    body: str = Field(min_length=1, max_length=200)

    @field_validator("title", "body")
    @classmethod
    def _known_placeholders(cls, value: str) -> str:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as e:
            raise ValueError(f"template is not valid: {e}") from None
        unknown = sorted(n for n in names if n not in TEMPLATE_FIELDS)
        if unknown:
            raise ValueError(f"unknown placeholder(s) {unknown}; allowed: {sorted(TEMPLATE_FIELDS)}")
        return value


class SceneCap(_Strict):
    max_pushes: int = Field(1, ge=1, le=10)
    days: int = Field(1, ge=1, le=30)


class Scene(_Strict):
    id: str
    name: str = Field(min_length=1, max_length=80)
    enabled: bool = True
    trigger: Literal[TRIGGERS]  # type: ignore[valid-type]
    priority: int = Field(ge=1, le=100, description="higher wins ties in scene selection")
    feed_size: int = Field(ge=1, le=6)
    audience: str = Field(min_length=1)
    materials: Materials
    template: Template
    cap: SceneCap = SceneCap()
    send_hour_local: int | None = Field(None, ge=0, le=23,
                                        description="scheduled scenes: the local hour they go out "
                                                    "(default: the platform's baseline hour)")

    _id_shape = field_validator("id")(classmethod(lambda cls, v: _check_id(v, "scene")))

    @field_validator("audience")
    @classmethod
    def _audience_parses(cls, value: str) -> str:
        try:
            parse_rule(value)
        except RuleError as e:
            raise ValueError(f"audience rule rejected: {e}") from None
        return value


class QuietHours(_Strict):
    start_hour: int = Field(22, ge=0, le=23, description="local hour quiet time starts")
    end_hour: int = Field(8, ge=0, le=23, description="local hour quiet time ends (exclusive)")

    def is_quiet(self, hour: int) -> bool:
        if self.start_hour == self.end_hour:
            return False
        if self.start_hour < self.end_hour:
            return self.start_hour <= hour < self.end_hour
        return hour >= self.start_hour or hour < self.end_hour


class Fatigue(_Strict):
    max_per_user_per_day: int = Field(2, ge=1, le=20, description="all scenes together, user's local day")
    min_spacing_hours: int = Field(4, ge=0, le=24)


class Gateway(_Strict):
    max_per_hour: int = Field(100_000, ge=1, description="planning capacity per UTC hour")
    rate_per_second: float = Field(200.0, gt=0)
    burst: int = Field(400, ge=1)
    concurrency: int = Field(32, ge=1, le=1024)
    project: str = "hermes-local"
    timeout_s: float = Field(10.0, gt=0, le=120, description="per request; a hung request is retried after it")
    max_attempts: int = Field(8, ge=1, le=50, description="then the message is dead-lettered")
    backoff_base_s: float = Field(0.5, gt=0, le=60, description="exponential backoff with full jitter")
    backoff_cap_s: float = Field(30.0, gt=0, le=3600)
    ramp_minutes: float = Field(20.0, ge=0, le=59, description="an hour's batch is released evenly over this")
    deadline_minutes: float = Field(55.0, gt=0, le=24 * 60, description="retries stop after this; what is "
                                    "left is dead-lettered with its reason, never silently dropped")
    max_in_doubt: int = Field(256, ge=1, le=100_000, description="messages claimed in the ledger and not yet "
                              "recorded, at most: after a crash these are sent again, so against a gateway that "
                              "ignores idempotency keys (FCM) this bounds the duplicates")
    lease_ttl_s: float = Field(30.0, ge=5, le=3600, description="a delivery run whose heartbeat is older than "
                               "this loses its lease to the next run of the same hour")


class Training(_Strict):
    train_days: int = Field(21, ge=3, le=60, description="days of push history in the training set")
    holdout_days: int = Field(4, ge=1, le=14, description="most recent days kept out for evaluation and the gate")
    promotion_margin: float = Field(0.002, ge=0, le=0.2,
                                    description="holdout AUC a candidate must gain over @champion to replace it")
    max_examples: int = Field(1_000_000, ge=10_000, le=50_000_000,
                              description="above this many pushed materials, train on a hash sample of whole users "
                                          "that keeps about this many")
    min_train_opens: int = Field(200, ge=1, le=1_000_000, description="opens the training window's push history "
                                 "must hold (and min_holdout_opens its holdout days) before a model is trained; below "
                                 "that the prior policy (training/prior.py) plans")
    min_holdout_opens: int = Field(50, ge=1, le=1_000_000, description="opens the holdout days must hold to train "
                                   "and to gate a trained model against the prior")
    prior_open_rate: float = Field(0.05, gt=0, lt=0.5, description="the prior policy's open rate for a typical "
                                   "push while there is no push history to calibrate it on")
    cold_start_explore_share: float = Field(0.2, ge=0, le=0.5, description="while the prior plans, this share of "
                                            "users get a uniformly drawn scene, and this share a random allowed "
                                            "hour (propensities logged), instead of feed.explore_share and "
                                            "windows.exploration_share: the history the first model learns from")


class Feed(_Strict):
    max_per_category: int = Field(2, ge=1, le=6, description="diversity: items of one category in one feed")
    support_sends: float = Field(500.0, ge=0, le=1e7, description="pseudo-sends pulling a scene's feed estimate "
                                 "toward the push history's pooled open rate: a scene the history never showed "
                                 "gets the pooled rate, one with many more sends than this keeps the model's")
    explore_share: float = Field(0.05, ge=0, le=0.5, description="users (a hash of user and day) who get a "
                                 "uniformly drawn scene of theirs instead of the best, propensity logged: how "
                                 "scenes the history lacks get data")
    reserves: int = Field(10, ge=0, le=20, description="per feed, the scene's next this many candidates held in "
                          "reserve: an item that sold between the plan and the send is replaced by the first reserve "
                          "still on sale (0: a feed only loses items)")
    shortlist_per_category: int | None = Field(
        5, ge=1, le=500, description="score only each (user, scene, category)'s this many best candidates by the "
        "model's item-level estimate (the scene's mean p(open) over a sample of users); null scores every candidate")
    shortlist_reference_users: int = Field(5000, ge=100, le=1_000_000,
                                           description="users whose candidates are all scored for that estimate")

    @model_validator(mode="after")
    def _shortlist_fills_a_feed(self) -> "Feed":
        if self.shortlist_per_category is not None and self.shortlist_per_category < self.max_per_category:
            raise ValueError(f"shortlist_per_category ({self.shortlist_per_category}) must be at least "
                             f"max_per_category ({self.max_per_category}): a feed takes that many of one category")
        return self


class Windows(_Strict):
    """Send windows: when each planned push lands (features/windows.py)."""
    policy: Literal["hermes", "baseline"] = Field("hermes", description="whose plan becomes the push batches")
    exploration_share: float = Field(0.05, ge=0, le=0.5, description="share of users sent at a random allowed hour")
    exploration_hours: Literal["activity", "uniform"] = Field(
        "activity", description="how an explored push's hour is drawn among the user's allowed hours: activity "
        "(default), in proportion to the user's activity share at each (their hour profile: every allowed hour keeps "
        "a chance, most pushes land when the user is about); uniform, every allowed hour alike (the widest cover for "
        "off-policy evaluation of other timing policies, at the most opens lost). The propensity logged is the draw's")
    prior_strength: float = Field(6.0, gt=0, le=10_000,
                                  description="pseudo-opens pulling a user's hour profile toward the population's")
    push_open_weight: float = Field(
        0.0, ge=0, le=100, description="one push opened at an hour counts as this many app opens in the hour profile. "
        "0 (default): push opens happen only at the hours the history sent pushes at, so counting them puts that "
        "hour's exposure into every user's timing (issue 24.2); the timing comes from the users' own app opens")
    first_send_hour_utc: int = Field(1, ge=0, le=23, description="first UTC hour of the send day the plan may use "
                                                                 "(lead time for the nightly run to finish)")
    plan_day: Literal["send_day", "most_waking_hours"] = Field(
        "send_day", description="each user's local plan day. send_day (default): the send day's date in every zone; "
        "east of UTC+8 its morning is over before the plan's first slot (Sydney's users are never pushed before 12:00 "
        "local). most_waking_hours: per zone, the send day's date or the date after, whichever has more waking hours "
        "inside the slots (features/windows.plan_day_lead): every morning reachable, but those users' feeds go out a "
        "day later than they were chosen, and on a marketplace whose good listings sell within a day that costs more "
        "than the hour gains (docs/generalization.md: +2.0 pp realised on one held-out world, -3.7 pp on another)")
    scheduled_window_hours: int = Field(3, ge=1, le=12, description="scheduled scenes may land this many hours "
                                                                     "from their hour on, when capacity is short")
    weekend_days: list[Annotated[int, Field(ge=1, le=7)]] = Field(
        [6, 7], max_length=6, description="the market's days off as ISO weekdays (1 = Monday .. 7 = Sunday), in each "
        "user's local time: a send day that is one of them is timed by the user's opens on those days, any other by "
        "their opens on the other days (e.g. [5, 6] for a Friday-Saturday weekend; [] for one profile for all days)")
    day_type_strength: float | None = Field(
        None, gt=0, le=10_000, description="pseudo-opens pulling a user's profile for the send day's type (weekend or "
        "not) toward their other days' profile moved as the population's hours move: a user with few opens on that "
        "day type keeps their usual hours, moved. null (default): fitted each night (empirical Bayes)")


class TriggerRun(_Strict):
    """How the trigger micro-batch runs (dags/hermes_triggers.py)."""
    window_minutes: int = Field(15, ge=5, le=60, description="event window per run (the DAG's schedule)")
    lateness_minutes: int = Field(60, ge=0, le=24 * 60, description="late events are still accepted this long")


class Stream(_Strict):
    """The streaming trigger engine (jobs/stream.py): events in seconds, decided by the model."""
    poll_ms: int = Field(200, ge=10, le=5000, description="how often the engine looks for new events when idle")
    checkpoint_seconds: float = Field(30.0, gt=0, le=3600, description="the rule state is checkpointed this often "
                                      "(when events arrived since): a restart replays the events after the checkpoint "
                                      "from the stream (decisions are never repeated); a checkpoint commits the rule "
                                      "state's open transaction with the offset (features/stream_rules.py)")
    max_lateness_minutes: int = Field(60, ge=1, le=24 * 60, description="a trigger due longer ago than this (an engine "
                                      "that was down, a late event) is logged as `stale`, not pushed")
    min_p_open: float | None = Field(None, gt=0, lt=1, description="a trigger is pushed only if the model's p(open) "
                                     "is at least this (per rule: the rule's own min_p_open); null: what a nightly "
                                     "push earns on average that day (the plan's mean expected open rate)")
    quiet_release_minutes: int = Field(60, ge=0, le=6 * 60, description="pushes held by quiet hours are released "
                                       "spread over this many minutes after the quiet end, not all at once")
    receipts_seconds: float = Field(60.0, gt=0, le=3600, description="the stream's receipts are written to "
                                    "raw/push_log this often (one file per send hour, rewritten whole)")


class Validation(_Strict):
    """Raw validation: row-level defects are quarantined and the night goes on; table-level failures stop it."""
    max_bad_share: float = Field(0.001, ge=0, le=1, description="quarantined share of a table's rows above which "
                                 "the run stops (table-level failure)")
    max_bad_share_per_table: dict[str, float] = Field(default_factory=dict, description="overrides by raw table")
    allow_empty: list[str] = Field(default_factory=lambda: ["item_changes", "push_log"], description="raw tables "
                                   "whose partition may hold zero rows (a day without item changes, a platform "
                                   "with no push history yet); an empty partition of any other stops the run")

    @field_validator("max_bad_share_per_table", "allow_empty")
    @classmethod
    def _known_tables(cls, value):
        for k in value:
            if k not in RAW_TABLES:
                raise ValueError(f"unknown raw table {k!r}; the raw contract has {list(RAW_TABLES)}")
        if isinstance(value, dict):
            for k, v in value.items():
                if not 0 <= v <= 1:
                    raise ValueError(f"max_bad_share_per_table.{k} must be a share in [0, 1], got {v!r}")
        return value

    def threshold(self, table: str) -> float:
        return self.max_bad_share_per_table.get(table, self.max_bad_share)


class Alerts(_Strict):
    """What raises an alert beyond failures (core/alerts.py; the receiver is $HERMES_ALERT_WEBHOOK)."""
    delivery_late_minutes: int = Field(20, ge=1, le=59, description="an hour's delivery that starts this long after "
                                       "its hour began (the schedule is behind) raises `delivery_behind`")


class Platform(_Strict):
    quiet_hours: QuietHours = QuietHours()
    fatigue: Fatigue = Fatigue()
    # Marketing pushes per device per local day, by platform (vendor channels cap them).
    platform_quotas: dict[str, int] = Field(default_factory=lambda: {
        "android_huawei": 2, "android_oppo": 2, "android_vivo": 2, "android_xiaomi": 1})
    gateway: Gateway = Gateway()
    baseline_hour_local: int = Field(20, ge=0, le=23, description="Push 1.0 send hour")
    baseline_explore_share: float = Field(0.05, ge=0, le=0.5, description="Push 1.0: share of its audience sent a "
                                          "uniformly drawn eligible scene instead of the global best (propensity "
                                          "logged, so other policies can be estimated off-policy from its log)")
    holdout_share: float = Field(0.02, ge=0, le=0.5, description="persistent holdout: this share of users (by a "
                                 "hash of user_id) gets no marketing push from any path, to measure incremental "
                                 "activation")
    training: Training = Training()
    feed: Feed = Feed()
    windows: Windows = Windows()
    trigger_run: TriggerRun = TriggerRun()
    stream: Stream = Stream()
    validation: Validation = Validation()
    alerts: Alerts = Alerts()

    @field_validator("platform_quotas")
    @classmethod
    def _known_platforms(cls, value: dict[str, int]) -> dict[str, int]:
        for k, v in value.items():
            if k not in PLATFORMS:
                raise ValueError(f"unknown platform {k!r}; allowed: {list(PLATFORMS)}")
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"quota for {k} must be a non-negative integer, got {v!r}")
        return value


TRIGGER_EVENTS = (
    "price_drop",      # an item the user favourited/carted dropped its price by >= min_drop_pct
    "seller_listed",   # a seller the user follows listed an item
    "selling_out",     # an item the user viewed >= min_views times drew >= min_viewers other viewers in 24 h
    "chat_waiting",    # a buyer's chat message waits unanswered by the seller (the pushed user) for wait_minutes
)
EXCEPTIONS = ("bought", "item_sold", "item_removed", "replied")


class When(_Strict):
    event: Literal[TRIGGER_EVENTS]  # type: ignore[valid-type]
    items: Literal["favourited", "carted", "favourited_or_carted"] = "favourited_or_carted"  # price_drop
    min_drop_pct: float = Field(5.0, ge=0, le=90, description="price_drop: smallest drop that counts, in %")
    min_views: int = Field(3, ge=1, le=100, description="selling_out: the user's own views of the item")
    min_viewers: int = Field(5, ge=1, le=10_000, description="selling_out: distinct viewers in the last 24 h")
    wait_minutes: int = Field(30, ge=1, le=24 * 60, description="chat_waiting: unanswered for this long")
    lookback_days: int = Field(28, ge=1, le=28, description="how far back favourites, views and follows count")


class Then(_Strict):
    scene: str


class Trigger(_Strict):
    """An IFTTT rule: when <event> [if <condition>] then push <scene> after <delay>, unless <exception> arrives
    within the delay, and not again for the same user x item within <regap_hours>."""
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str
    name: str = Field(min_length=1, max_length=80)
    enabled: bool = True
    when: When
    condition: str | None = Field(None, alias="if", description="audience rule over the user's features")
    then: Then
    delay_minutes: int = Field(0, ge=0, le=24 * 60)
    unless: tuple[Literal[EXCEPTIONS], ...] = ()  # type: ignore[valid-type]
    regap_hours: int = Field(72, ge=1, le=30 * 24, description="same user x item not pushed again within")
    min_p_open: float | None = Field(None, gt=0, lt=1, description="the streaming engine pushes this rule's triggers "
                                     "only at this p(open) or above (default: platform stream.min_p_open)")

    _id_shape = field_validator("id")(classmethod(lambda cls, v: _check_id(v, "trigger")))

    @field_validator("condition")
    @classmethod
    def _condition_parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_rule(value)
            except RuleError as e:
                raise ValueError(f"condition rejected: {e}") from None
        return value


class HermesConfig(_Strict):
    platform: Platform
    scenes: tuple[Scene, ...]
    triggers: tuple[Trigger, ...] = ()

    @model_validator(mode="after")
    def _unique_and_enough(self) -> "HermesConfig":
        seen: set[str] = set()
        for s in self.scenes:
            if s.id in seen:
                raise ValueError(f"scene id {s.id!r} is defined twice")
            seen.add(s.id)
        if not any(s.enabled for s in self.scenes):
            raise ValueError("no scene is enabled")
        tids: set[str] = set()
        for t in self.triggers:
            if t.id in tids:
                raise ValueError(f"trigger id {t.id!r} is defined twice")
            tids.add(t.id)
            if t.then.scene not in seen:
                raise ValueError(f"trigger {t.id!r}: then.scene {t.then.scene!r} is not a scene; scenes: {sorted(seen)}")
        return self

    def scene(self, scene_id: str) -> Scene:
        for s in self.scenes:
            if s.id == scene_id:
                return s
        raise KeyError(f"no scene {scene_id!r} in the configuration")

    @property
    def enabled_scenes(self) -> tuple[Scene, ...]:
        return tuple(s for s in self.scenes if s.enabled)
