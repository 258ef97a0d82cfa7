"""A family of worlds, not one world: structurally different marketplaces in the same raw contract.

`hermes simulate --variant NAME` (and `WorldSpec(variant=NAME)`) builds one of them. Each variant changes how
the world is made — when users are active, where they live, how many categories there are and how concentrated,
who sells, whether price says anything about quality, what the push history did — never how Hermes reads it.
`random` draws every knob from the seed, so each seed is a different world — the true response too: how much the
hour matters, how fast users tire, what a longer feed or a relevant item adds, which scenes are liked (the named
variants keep the simulator's documented ResponseParams).

Tuning uses `base`, `global_dst`, `night_owls` and `price_blind` on seeds below 100. `holdout_mix` and seeds
>= 100 are kept out of all tuning: the generalization benchmark (bench/generalization.py) reports them apart.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Variant:
    name: str = "base"
    # activity: "evening" (one or two bumps, mostly evenings), "multi_peak" (one to three peaks anywhere in the
    # waking day), "night_owl" (a share of users whose peaks sit between 22:00 and 03:00 and who do not sleep then)
    hour_shape: str = "evening"
    night_owl_share: float = 0.0
    weekend_hour_shift: int = 0          # weekend activity is this many hours later
    timezones: tuple[str, ...] = ("Asia/Shanghai", "Asia/Tokyo", "Asia/Singapore", "Europe/London",
                                  "America/Los_Angeles", "Australia/Sydney")
    timezone_shares: tuple[float, ...] = (0.78, 0.05, 0.05, 0.04, 0.04, 0.04)
    categories: int = 40
    category_tail: float = 0.8           # Zipf exponent of category popularity
    seller_shape: float = 1.5            # Pareto shape of listings per seller (smaller: more concentrated)
    activity_median: float = 1.0         # organic sessions per day of the median user
    dormant_share: float = 0.17
    quality_coef: float = 0.35           # the true response's weight on latent item quality
    value_coef: float = 0.3              # ... and on price attractiveness within the category
    history_hour_utc: int | None = 12    # Push 1.0's send hour (UTC); None: a random local hour 09-21 per push
    history_scenes: tuple[str, ...] = ("hot_items", "guess_you_like", "new_listings", "price_drop")
    # the true response beyond item quality and value (lab.simulator.ground_truth.ResponseParams): None keeps its
    # documented value
    hour_coef: float | None = None       # x log(24 * P(active at the send hour)): how much the hour matters
    fatigue_24h: float | None = None     # per push in the previous 24 h
    fatigue_7d: float | None = None      # per push in the previous 7 days
    feed_breadth: float | None = None    # x log(relevant live items shown): what a longer feed adds
    interest: float | None = None        # a shown item the user favourited / carted / follows the seller of
    timely: float | None = None          # ... and just listed or dropped in price
    scene_effect_shift: tuple[tuple[str, float], ...] = ()   # added to ResponseParams' scene effects

    def as_dict(self) -> dict:
        return asdict(self)

    def response(self) -> dict:
        """Keyword arguments for ResponseParams: this variant's item terms, weekend shift and response knobs."""
        from lab.simulator.ground_truth import ResponseParams

        effects = dict(ResponseParams().scene_effect)
        for scene, shift in self.scene_effect_shift:
            effects[scene] = effects.get(scene, 0.0) + shift
        knobs = {"hour": self.hour_coef, "fatigue_24h": self.fatigue_24h, "fatigue_7d": self.fatigue_7d,
                 "feed_breadth": self.feed_breadth, "interest": self.interest, "timely": self.timely}
        return {"quality": self.quality_coef, "value": self.value_coef, "weekend_hour_shift": self.weekend_hour_shift,
                "scene_effect": effects, **{k: v for k, v in knobs.items() if v is not None}}


DST_ZONES = ("Europe/London", "Europe/Berlin", "America/New_York", "America/Chicago", "America/Los_Angeles",
             "America/Sao_Paulo", "Australia/Sydney", "Asia/Kolkata")
UNKNOWN_SCENES = ("daily_picks", "for_you", "just_in", "deals")     # ids no shipped scene config knows

VARIANTS = {
    "base": Variant(),
    # time zones with DST on both hemispheres, one to three activity peaks, later weekends, a history sent at
    # 03:00 UTC (midday in Asia, night in the Americas) under scene ids the config does not know
    "global_dst": Variant(name="global_dst", hour_shape="multi_peak", weekend_hour_shift=2, timezones=DST_ZONES,
                          timezone_shares=(0.14, 0.14, 0.18, 0.1, 0.14, 0.12, 0.08, 0.1), history_hour_utc=3,
                          history_scenes=UNKNOWN_SCENES),
    # night owls, sparse users, a long tail of categories, concentrated sellers
    "night_owls": Variant(name="night_owls", hour_shape="night_owl", night_owl_share=0.35, categories=120,
                          category_tail=1.1, seller_shape=0.8, activity_median=0.35, dormant_share=0.3,
                          history_hour_utc=None),
    # item quality not tied to price: price level says nothing, behaviour shows quality
    "price_blind": Variant(name="price_blind", hour_shape="multi_peak", categories=80, category_tail=1.0,
                           quality_coef=0.7, value_coef=0.0, history_hour_utc=None, history_scenes=UNKNOWN_SCENES),
    # held out of all tuning: a mix no tuning run saw
    "holdout_mix": Variant(name="holdout_mix", hour_shape="night_owl", night_owl_share=0.2, weekend_hour_shift=3,
                           timezones=DST_ZONES, timezone_shares=(0.1, 0.1, 0.25, 0.15, 0.15, 0.1, 0.05, 0.1),
                           categories=150, category_tail=1.2, seller_shape=1.0, activity_median=0.5,
                           dormant_share=0.25, quality_coef=0.6, value_coef=0.05, history_hour_utc=16,
                           history_scenes=UNKNOWN_SCENES),
}
TUNING_VARIANTS = ("base", "global_dst", "night_owls", "price_blind")
HELD_OUT_VARIANTS = ("holdout_mix",)
HELD_OUT_SEED_FROM = 100


def variant(name: str, seed: int = 0) -> Variant:
    """A named variant, or `random`: every knob drawn from the seed (a different world per seed)."""
    if name == "random":
        return randomised(seed)
    if name not in VARIANTS:
        raise ValueError(f"unknown world variant {name!r}; choose one of {sorted(VARIANTS) + ['random']}")
    return VARIANTS[name]


RESPONSE_RANGES = {"hour_coef": (0.25, 0.8), "fatigue_24h": (-0.8, -0.15), "fatigue_7d": (-0.2, -0.04),
                   "feed_breadth": (0.0, 0.6), "interest": (0.2, 1.2), "timely": (0.3, 1.5)}
SCENE_EFFECT_SD = 0.3


def randomised(seed: int) -> Variant:
    """Every knob drawn from the seed. The response knobs come from a second stream, so the world's structure for a
    seed is the same as before they were drawn (2026-12-06); its truth is not."""
    from lab.simulator.ground_truth import ResponseParams

    r2 = np.random.default_rng([seed, 4243])
    response = {k: float(r2.uniform(lo, hi)) for k, (lo, hi) in RESPONSE_RANGES.items()}
    shifts = tuple((scene, float(r2.normal(0, SCENE_EFFECT_SD))) for scene in sorted(ResponseParams().scene_effect))
    rng = np.random.default_rng([seed, 4242])
    dst = rng.random() < 0.5
    zones = DST_ZONES if dst else Variant().timezones
    shares = rng.dirichlet(np.full(len(zones), 1.5 if dst else 0.6))
    return replace(Variant(), name="random",
                   hour_shape=str(rng.choice(["evening", "multi_peak", "night_owl"])),
                   night_owl_share=float(rng.uniform(0.1, 0.4)), weekend_hour_shift=int(rng.integers(0, 4)),
                   timezones=zones, timezone_shares=tuple(float(s) for s in shares),
                   categories=int(rng.integers(20, 160)), category_tail=float(rng.uniform(0.6, 1.3)),
                   seller_shape=float(rng.uniform(0.7, 2.0)), activity_median=float(rng.uniform(0.3, 1.5)),
                   dormant_share=float(rng.uniform(0.05, 0.35)), quality_coef=float(rng.uniform(0.2, 0.8)),
                   value_coef=float(rng.uniform(0.0, 0.4)),
                   history_hour_utc=None if rng.random() < 0.3 else int(rng.integers(0, 24)),
                   history_scenes=UNKNOWN_SCENES if rng.random() < 0.5 else Variant().history_scenes,
                   scene_effect_shift=shifts, **response)
