"""Send windows: which hour of the send day each planned push lands in.

Pure numpy, no Spark and no I/O: the stage reads the plan (one row per user) into arrays and calls these.
The plan is cut into S = 36 hourly *slots*: the UTC hours from the send day's 00:00 to 12:00 the next day;
slots 24-35 go out with the next UTC day's hours 0-11, beside the next plan's own (whose capacity they use up
first). Each user's local *plan day* is the send day's date: it ends inside the slots in every zone (UTC-12's at
12:00 UTC the next day), but far east it began before them (Sydney's Saturday 08:00-11:00 is Friday 21:00-24:00
UTC, before the nightly has run). With windows.plan_day = most_waking_hours it is, per zone, the send day's date
or the date after, whichever has more waking hours inside the slots (`plan_day_lead`). For each user u and slot s:

    value[u, s] = P(u opens the push if it lands in slot s), or NaN where the slot is not allowed
                  (quiet hours in the user's local time, before the user's earliest send time under the
                  spacing rule, after the user's local plan day, before the plan's first usable hour).

The per-hour open probability comes from the matched feed's probability at the user's reference hour
(what scoring assumed) moved along the user's *hour profile* — the share of the user's app opens and push
opens in each local hour, smoothed toward the population's profile (users with little history fall back
to the population) — by the CTR model's own timing elasticity (log-odds per unit of log hour share).

`assign` maximises total expected opens subject to a capacity per slot: a transportation problem with
one unit of demand per user. It is solved through its dual — one price per slot — by market-clearing
price updates (each slot's price set so that at most its capacity of users prefer it, damped), then a
repair pass that enforces capacity exactly. The dual value is an upper bound on the optimum, so the
result reports how far from optimal it can be at most, and the loss against the unconstrained optimum.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np

SLOTS = 36             # UTC hours of a plan: the send day's 24, then 12 of the next day (western time zones)
DAY_SLOTS = 24         # slots of the send day itself; slot DAY_SLOTS + h is hour h of the next UTC day
NO_WINDOW = "no_window"        # no allowed slot at all (quiet hours / spacing / the plan day leave none)
NO_CAPACITY = "no_capacity"    # every allowed slot is full


# ---- hour profiles and per-slot values ----------------------------------------------------------------
def hour_profiles(app_open_hours: np.ndarray, push_open_hours: np.ndarray, push_open_weight: float,
                  prior_strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Per user, the share of activity in each local hour [n, 24] (rows sum to 1), and the population
    prior [24] it is smoothed toward: (spread_u + k * prior) / (n_u + k). Each open is first spread over its
    neighbouring hours by the model's HOUR_KERNEL (a Gaussian of sd 1 h, wrapping at midnight; habits are bumps,
    not single hours), as features/pairs.py does for `hour_share_log`: on the world variants this takes the
    activity at each user's most likely allowed hour from 0.79-0.89 of their true best to 0.84-0.94."""
    counts = _spread(app_open_hours.astype(np.float64) + push_open_weight * push_open_hours.astype(np.float64))
    total = counts.sum(axis=0)
    prior = total / total.sum() if total.sum() > 0 else np.full(24, 1 / 24)
    prior = 0.99 * prior + 0.01 / 24          # never exactly zero: log shares stay finite
    q = (counts + prior_strength * prior) / (counts.sum(axis=1, keepdims=True) + prior_strength)
    return q, prior


def _spread(raw: np.ndarray) -> np.ndarray:
    from features.pairs import HOUR_KERNEL

    counts = np.zeros_like(raw)
    for shift, weight in HOUR_KERNEL:
        counts += weight * np.roll(raw, shift, axis=1)
    return counts


def day_type_profiles(base: np.ndarray, day_type_opens: np.ndarray, strength: float) -> np.ndarray:
    """Each user's hour profile for one type of day (the send day's: a day off or not) [n, 24]: their app opens on
    days of that type, kernel-spread like the all-days profile, smoothed toward a `base` profile (their other days'
    hours moved as the population's move, fit_day_shift) with `strength` pseudo-opens — (spread_u + k base_u) /
    (n_u + k). A user with many opens of that type gets their own hours; one with few gets their usual hours,
    moved as everybody's move."""
    counts = _spread(day_type_opens.astype(np.float64))
    return (counts + strength * base) / (counts.sum(axis=1, keepdims=True) + strength)


STRENGTH_GRID = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0, 256.0, 1024.0)


def fit_day_type_strength(day_type_opens: np.ndarray, q_other: np.ndarray, grid=STRENGTH_GRID) -> tuple[float, dict]:
    """How far the population's users' hours on one type of day stray from their hours on the other days, as the
    `strength` of day_type_profiles: empirical Bayes, the k of the grid maximising the marginal likelihood of each
    user's opens on days of that type (a Dirichlet-multinomial around their other days' profile q_other, concentration
    k) summed over users with any. Small k: day types differ, a few opens on the day type outweigh the usual hours;
    large k: they do not, and the all-days profile stays (a world whose weekends are its weekdays loses nothing)."""
    from scipy.special import gammaln

    c = day_type_opens.astype(np.float64)
    n = c.sum(axis=1)
    keep = n > 0
    c, n, base = c[keep], n[keep], np.clip(q_other[keep], 1e-9, None)
    if not keep.any():
        return float(grid[-1]), {"users": 0, "strength": float(grid[-1]), "why": "no opens on this type of day"}
    const = (gammaln(n + 1) - gammaln(c + 1).sum(axis=1)).sum()
    ll = np.array([const + (gammaln(k) - gammaln(k + n) + (gammaln(k * base + c) - gammaln(k * base)).sum(axis=1)).sum()
                   for k in grid])
    best = int(np.argmax(ll))
    return float(grid[best]), {"users": int(keep.sum()), "opens": int(n.sum()), "strength": float(grid[best]),
                               "log_lik_per_open_gain_vs_same_hours": float((ll[best] - ll[-1]) / n.sum())}


MAX_DAY_SHIFT = 4     # hours a type of day's habits may move as a whole, either way


def fit_day_shift(day_type_opens: np.ndarray, q_other: np.ndarray, max_shift: int = MAX_DAY_SHIFT,
                  iters: int = 200) -> tuple[np.ndarray, np.ndarray, dict]:
    """How the population's hours move from the other days to this type of day: a distribution w over whole-hour
    shifts d in [-max_shift, max_shift] such that a user's opens on this type of day fall as sum_d w_d q_other[h - d]
    (their other days' profile, moved). Maximum likelihood by EM over the users with opens of that type: "weekends run
    two hours later" is w concentrated on +2; no difference, on 0; half the people later, a mixture. Few parameters,
    so thin users borrow the population's move: a user with two weekend opens gets their own weekday peaks, moved."""
    keep = day_type_opens.sum(axis=1) > 0
    shifts = np.arange(-max_shift, max_shift + 1)
    w = np.zeros(len(shifts))
    w[max_shift] = 1.0
    if not keep.any():
        return shifts, w, {"users": 0, "why": "no opens on this type of day: no move"}
    c = day_type_opens[keep].astype(np.float32)
    moved = np.stack([np.roll(q_other[keep].astype(np.float32), d, axis=1) for d in shifts])   # [D, n, 24]
    w = np.full(len(shifts), 1.0 / len(shifts))
    for i in range(iters):
        mix = np.tensordot(w, moved, axes=1).astype(np.float32)
        new = w * np.einsum("dnh,nh->d", moved, c / np.maximum(mix, 1e-12))
        new /= new.sum()
        done = np.abs(new - w).max() < 1e-6
        w = new
        if done:
            break
    return shifts, w, {"users": int(keep.sum()), "iterations": i + 1,
                       "shift_hours": {int(d): round(float(x), 3) for d, x in zip(shifts, w) if x >= 0.005}}


def moved_profiles(q: np.ndarray, shifts: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_d w_d q[:, h - d]: each user's profile moved by the population's shift distribution."""
    out = np.zeros_like(q)
    for d, x in zip(shifts, w):
        if x > 0:
            out += x * np.roll(q, int(d), axis=1)
    return out


def is_day_off(send_day: str, weekend_days) -> bool:
    """The send day is one of the market's days off (ISO weekdays): every user's local plan day has its date."""
    return datetime.fromisoformat(send_day).isoweekday() in set(int(d) for d in weekend_days)


@dataclass
class Recalibration:
    """A model version's feed-level calibration: logit(p') = a + b logit(p) + c log(n) + d[scene] + e i, p the feed's
    estimate (its best item's p_open), n the items it shows, d[scene] its scene's own offset and i = 1 when the feed
    holds an item of the user's interest (they favourited or carted it or follow its seller: features/pairs.py), fitted
    by training on its holdout's pushes (the estimate of each push's feed -> opened or not;
    training.train.feed_recalibration).
    Identity until there are enough; c stays 0 until Hermes' own pushes show feeds of several lengths (a one-item
    history says nothing of what a longer feed is worth, so the lead item's estimate stands for the feed), and d is
    empty until they show several scenes (until then a scene the history never held is scored as the history's
    average push: training.model.centre_scene_effects); a scene without an offset gets 0. e stays 0 until Hermes' own
    pushes hold both feeds with and without such an item: the model's features do not tell them apart (a history of popular
    items says nothing of a push about the very item a user favourited), and across three held-out closed loops the
    feeds holding one opened 1.2-2.4 times the odds the recalibration without e put on them (docs/generalization.md).

    The slope b corrects the model's ranking among the items, hours and scenes the plan picks (their estimates are the
    best of many, so too spread); it leaves the model's own fatigue effect at full strength: logit(p') = a +
    b (logit(p) - f) + f + ..., f = fatigue_1d * (pushes the day before) + fatigue_7d * (pushes in the 7 days before),
    the model's log-odds per push (training.train.fatigue_elasticities). The plan does not pick a user's push load, so
    no selection spreads that part of the estimate, and a platform that pushes more than its history did moves it from
    one night to the next, where a recalibration fitted on the night before cannot follow a shrunken effect."""
    a: float = 0.0
    b: float = 1.0
    pushes: int = 0
    opens: int = 0
    nights: int = 0
    reason: str = "no pushes of Hermes' own plans with outcomes yet"
    c: float = 0.0             # log-odds per unit of log(items in the feed): what a longer feed adds to its lead item
    scene: dict = field(default_factory=dict)   # scene_id -> log-odds its feeds turned out above or below the rest
    fatigue_1d: float = 0.0    # the model's log-odds per push the day before (<= 0), kept out of the slope
    fatigue_7d: float = 0.0    # the same per push in the 7 days before
    interest: float = 0.0      # e: log-odds of a feed holding an item of the user's interest over one without

    @property
    def identity(self) -> bool:
        return self.a == 0.0 and self.b == 1.0 and self.c == 0.0 and not self.scene and self.interest == 0.0

    def offsets(self, scenes) -> np.ndarray:
        """d[scene] for an array of scene ids (any shape; 0 for a scene without an offset)."""
        ids = np.asarray(scenes, dtype=object)
        uniq, inv = np.unique(ids.astype(str), return_inverse=True)
        return np.array([self.scene.get(s, 0.0) for s in uniq], dtype=np.float64)[inv].reshape(ids.shape)

    def fatigue(self, pushes_1d, pushes_7d) -> np.ndarray:
        """f: the model's log-odds from a push load (arrays of any broadcastable shape)."""
        return (self.fatigue_1d * np.asarray(pushes_1d, dtype=np.float64)
                + self.fatigue_7d * np.asarray(pushes_7d, dtype=np.float64))

    def apply(self, p: np.ndarray, n_items: np.ndarray | None = None, scenes=None, pushes=None,
              interest=None) -> np.ndarray:
        """p: the feeds' estimates (any shape); n_items: the items of each feed, broadcastable to p (None: one);
        scenes: each feed's scene id, broadcastable to p (None: no scene offset); pushes: (pushes the day before,
        pushes in the 7 days before) of each feed's user, broadcastable to p (None: the slope scales all of p);
        interest: 1 for a feed holding an item of its user's interest, else 0, broadcastable to p (None: 0)."""
        breadth = self.c != 0.0 and n_items is not None
        by_scene = bool(self.scene) and scenes is not None
        wanted = self.interest != 0.0 and interest is not None
        load = pushes is not None and self.b != 1.0 and (self.fatigue_1d != 0.0 or self.fatigue_7d != 0.0)
        if self.a == 0.0 and self.b == 1.0 and not breadth and not by_scene and not wanted:
            return p
        q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
        z = self.a + self.b * np.log(q / (1 - q))
        if load:
            z = z + (1.0 - self.b) * self.fatigue(*pushes)
        if breadth:
            z = z + self.c * np.log(np.maximum(np.asarray(n_items, dtype=np.float64), 1.0))
        if by_scene:
            z = z + self.offsets(scenes)
        if wanted:
            z = z + self.interest * np.asarray(interest, dtype=np.float64)
        return 1 / (1 + np.exp(-z))

    def as_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: dict, reason: str | None = None) -> "Recalibration":
        """From as_dict()'s keys (a report's JSON); a dict written before c, the scene offsets, the fatigue terms or e
        has none."""
        return cls(a=float(d["a"]), b=float(d["b"]), c=float(d.get("c") or 0.0),
                   scene={str(k): float(v) for k, v in (d.get("scene") or {}).items()},
                   fatigue_1d=float(d.get("fatigue_1d") or 0.0), fatigue_7d=float(d.get("fatigue_7d") or 0.0),
                   interest=float(d.get("interest") or 0.0), pushes=int(d.get("pushes", 0)),
                   opens=int(d.get("opens", 0)), nights=int(d.get("nights", 0)),
                   reason=reason if reason is not None else str(d.get("reason", "")))


SLOPE_PRIOR_SD = 0.5     # Platt slope's prior: N(1, 0.5^2) - the model's ranking is trusted until the data says not
BREADTH_PRIOR_SD = 0.5   # the feed-length term's prior: N(0, 0.5^2) - a feed is worth its lead item until shown not
BREADTH_LIMITS = (-1.0, 1.0)
BREADTH_MIN_SPREAD = 0.1  # sd of log(items) below which the lengths are too alike to tell a length's worth
# a scene's own offset: N(0, 1) - a scene's feeds may turn out a few times above or below what the model extrapolated
# (a scene the history never held is scored as its average push; one about an item the user favourited opens far
# more), and a scene with a few dozen pushes stays near the rest until its pushes say otherwise
SCENE_PRIOR_SD = 1.0
SCENE_LIMITS = (-3.0, 3.0)
# the interest term's prior: N(0, 1) - a feed of something the user wants is worth the model's estimate until the pushes
# say otherwise; it is fitted once INTEREST_MIN_PUSHES pushes with such an item and as many without are among them
INTEREST_PRIOR_SD = 1.0
INTEREST_LIMITS = (-3.0, 3.0)
INTEREST_MIN_PUSHES = 30


def fit_recalibration(p: np.ndarray, opened: np.ndarray, nights: int, min_opens: int = 100,
                      min_pushes: int = 1000, n_items: np.ndarray | None = None,
                      scenes: np.ndarray | None = None, pushes: tuple | None = None,
                      fatigue: tuple[float, float] = (0.0, 0.0), interest: np.ndarray | None = None) -> Recalibration:
    """Platt scaling of a model's estimates on pushes and their outcomes; nights: how many days the pushes span
    (reported); n_items: the items each push showed — with feeds of different lengths among them, a term
    c log(n) is fitted too (else c = 0); scenes: each push's scene — with several scenes among them, each scene gets
    its own offset d[scene] (else none); interest: 1 for each push whose feed held an item of its user's interest
    (features/pairs.py) — with at least INTEREST_MIN_PUSHES of each kind, a term e is fitted (else e = 0).

    The slope has a prior N(1, SLOPE_PRIOR_SD^2), c one of N(0, BREADTH_PRIOR_SD^2) and each d[scene] one of
    N(0, SCENE_PRIOR_SD^2) (a maximum a posteriori fit: a scene seen a few times stays near the pooled calibration);
    they are kept within [0.25, 4], BREADTH_LIMITS and SCENE_LIMITS, and the intercept is always the best one for the
    slopes kept, so the recalibrated estimates add up to the opens seen. Hermes' own pushes are its best-scored items:
    their estimates span a narrow range, where the slope is barely identified - fitted freely it swung to 0.25 or 4 on
    a few hundred opens, and the intercept fitted with the unclipped slope then put the plan's level off by a third
    (or at 1.0). Why c: a feed is estimated by its best item (features/selection.py), the only thing a one-item
    history can speak of; once Hermes' own pushes show what a longer feed adds over its lead item, the plan's
    estimates — and the scene choice, which compares a user's feeds of different lengths (jobs/select.py) — carry it.
    Why d: the model scores a scene the history never held as the history's average push, and one whose pushes are
    about an item the user favourited or a seller they follow has no history to learn that from; the first nights'
    pushes show each scene's level, and the scene choice compares feeds with it. Why e: the model's features cannot
    tell a push of the very item a user favourited from another of the same scene and estimate (its history was not
    chosen by it); the pushes' outcomes can, and the selection and the plan then value such feeds as they open.
    pushes: (pushes the day before, in the 7 days before) of each push's user, and fatigue the model's log-odds per
    push of each (training.train.fatigue_elasticities): that part of each estimate enters with coefficient 1, outside
    the slope (Recalibration's docstring says why)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    y = np.asarray(opened, dtype=bool)
    n, k = len(y), int(y.sum())
    if n < min_pushes or k < min_opens or k == n:
        return Recalibration(pushes=n, opens=k, nights=nights,
                             reason=f"{n} pushes, {k} opens: below {min_pushes} pushes / {min_opens} opens")
    z = np.log(p / (1 - p))
    e1, e7 = (float(min(fatigue[0], 0.0)), float(min(fatigue[1], 0.0))) if pushes is not None else (0.0, 0.0)
    load = (e1 * np.asarray(pushes[0], dtype=np.float64) + e7 * np.asarray(pushes[1], dtype=np.float64)
            if pushes is not None else np.zeros(n))
    z = z - load
    lengths = np.log(np.maximum(np.asarray(n_items, dtype=np.float64), 1.0)) if n_items is not None else np.zeros(n)
    breadth = bool(lengths.std() >= BREADTH_MIN_SPREAD)
    names, which = (np.unique(np.asarray(scenes).astype(str), return_inverse=True) if scenes is not None
                    else (np.array([], dtype=str), np.zeros(n, dtype=np.int64)))
    if len(names) < 2:
        names = np.array([], dtype=str)
    onehot = (which[:, None] == np.arange(len(names))[None, :]).astype(np.float64)
    flag = np.asarray(interest, dtype=np.float64) if interest is not None else np.zeros(n)
    wanted = bool(min(int((flag > 0).sum()), int((flag <= 0).sum())) >= INTEREST_MIN_PUSHES)
    flag = (flag > 0).astype(np.float64)
    x = np.column_stack([np.ones(n), z] + ([lengths] if breadth else []) + ([flag] if wanted else []) + [onehot])
    prior_mean = np.array([0.0, 1.0] + ([0.0] if breadth else []) + ([0.0] if wanted else []) + [0.0] * len(names))
    prior_prec = np.array([0.0, 1.0 / SLOPE_PRIOR_SD ** 2] + ([1.0 / BREADTH_PRIOR_SD ** 2] if breadth else [])
                          + ([1.0 / INTEREST_PRIOR_SD ** 2] if wanted else []) + [1.0 / SCENE_PRIOR_SD ** 2] * len(names))
    limits = ([(-np.inf, np.inf), (0.25, 4.0)] + ([BREADTH_LIMITS] if breadth else []) + ([INTEREST_LIMITS] if wanted else [])
              + [SCENE_LIMITS] * len(names))
    theta = _map_logistic(x, y, prior_mean, prior_prec, limits, offset=load)
    if not np.isfinite(theta).all():
        return Recalibration(pushes=n, opens=k, nights=nights,
                             reason=f"{n} pushes, {k} opens: the fit did not converge ({theta.round(3).tolist()}), "
                                    "identity kept")
    c = float(theta[2]) if breadth else 0.0
    e = float(theta[3 if breadth else 2]) if wanted else 0.0
    d = {str(s): float(v) for s, v in zip(names, theta[len(theta) - len(names):])}
    extra = f", c={c:.3f} per log item over feeds of {np.exp(lengths.min()):.0f}-{np.exp(lengths.max()):.0f}" if breadth else ""
    if wanted:
        extra += f", e={e:+.3f} for the {int(flag.sum())} feeds holding an item of the user's interest"
    if d:
        extra += ", scene offsets " + " ".join(f"{s} {v:+.2f} ({int((which == i).sum())})" for i, (s, v) in
                                              enumerate(d.items()))
    if e1 or e7:
        extra += f", the model's fatigue ({e1:+.3f} per push the day before, {e7:+.3f} per push in 7 days) unscaled"
    return Recalibration(a=float(theta[0]), b=float(theta[1]), c=c, scene=d, pushes=n, opens=k, nights=nights,
                         reason=f"fitted on {n} pushes ({k} opens) of the last {nights} night(s){extra}",
                         fatigue_1d=e1, fatigue_7d=e7, interest=e)


def _map_logistic(x: np.ndarray, y: np.ndarray, prior_mean: np.ndarray, prior_prec: np.ndarray,
                  limits: list[tuple[float, float]], offset: np.ndarray | None = None) -> np.ndarray:
    """The maximum a posteriori of a logistic regression with independent normal priors (precision 0: flat) and each
    coordinate kept within its limits: L-BFGS-B on the negative log posterior (box constraints are its own; a plain
    Newton's method with the out-of-bounds coordinates clamped afterwards diverged once a scene with no opens sat
    beside an intercept its offsets are collinear with), then the intercept (coordinate 0, unbounded) polished by
    Newton's method alone, so the fitted probabilities add up to the opens seen. offset: log-odds added to every row
    with coefficient 1 (none: 0)."""
    from scipy.optimize import minimize

    yf = y.astype(np.float64)
    off = np.zeros(len(yf)) if offset is None else np.asarray(offset, dtype=np.float64)

    def loss(theta):
        z = x @ theta + off
        q = 1 / (1 + np.exp(-z))
        d = theta - prior_mean
        return (float(np.sum(np.logaddexp(0.0, z) - yf * z) + 0.5 * np.sum(prior_prec * d * d)),
                x.T @ (q - yf) + prior_prec * d)

    bounds = [(None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi) for lo, hi in limits]
    start = np.clip(prior_mean, [lo for lo, _ in limits], [hi for _, hi in limits]).astype(np.float64)
    start[0] = np.log(max(yf.mean(), 1e-6) / max(1 - yf.mean(), 1e-6)) - float(np.mean(x[:, 1:] @ start[1:] + off))
    theta = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds,
                     options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9}).x
    for _ in range(50):                      # the intercept alone: a concave 1-D problem from near its optimum
        q = 1 / (1 + np.exp(-(x @ theta + off)))
        step = float(np.sum(yf - q) - prior_prec[0] * (theta[0] - prior_mean[0])) / \
            max(float(np.sum(q * (1 - q))) + prior_prec[0], 1e-12)
        theta[0] += step
        if abs(step) < 1e-10:
            break
    return theta


def is_quiet(local_hour: np.ndarray, quiet: tuple[int, int]) -> np.ndarray:
    """Whether each local hour lies inside quiet hours [start, end) (wrapping midnight when start > end; none when
    start == end): the rule of core.config.schema.QuietHours.is_quiet, on arrays."""
    qs, qe = quiet
    if qs == qe:
        return np.zeros(np.shape(local_hour), dtype=bool)
    if qs < qe:
        return (local_hour >= qs) & (local_hour < qe)
    return (local_hour >= qs) | (local_hour < qe)


def _standard_offset_hours(zone: str, year: int) -> float:
    """The zone's smaller UTC offset of January and July: its standard time (a plan-day rule that used the
    current offset would move a DST zone's plan day at each change, skipping or repeating a local day)."""
    z = ZoneInfo(zone)
    return min(datetime(year, m, 1, 12, tzinfo=timezone.utc).astimezone(z).utcoffset().total_seconds()
               for m in (1, 7)) / 3600.0


def plan_day_lead(zone: str, send_day: str, quiet: tuple[int, int], first_slot: int) -> int:
    """0 when a user in `zone` is planned for the send day's own local date, 1 for the date after: whichever of the
    two has more waking hours (outside quiet hours [start, end)) whose whole hour lies inside the plan's usable
    slots [first_slot, SLOTS), at the zone's standard offset; a tie keeps the send day's date. With quiet hours
    22-08 and first slot 01:00 UTC: 0 up to UTC+8 (Shanghai loses 08:00 against 20:00-21:00 the day after),
    1 from UTC+9 (Tokyo loses 21:00 the day after against 08:00-09:00; Sydney and Auckland lose nothing).
    A fixed rule per zone, so consecutive nights plan consecutive local days: a zone's lead changes only when
    the quiet hours or the first slot do (one local day is then skipped, or repeated: fatigue's push history
    holds the previous plan's later slots, so the daily cap sees its pushes)."""
    waking = np.flatnonzero(~is_quiet(np.arange(24), quiet)).tolist()
    offset = _standard_offset_hours(zone, int(send_day[:4]))
    reach = [sum(1 for h in waking if first_slot <= 24 * lead + h - offset <= SLOTS - 1) for lead in (0, 1)]
    return int(reach[1] > reach[0])


def plan_day_leads(zones, send_day: str, quiet: tuple[int, int], first_slot: int) -> dict[str, int]:
    """{zone: plan_day_lead} of each distinct zone name."""
    return {z: plan_day_lead(z, send_day, quiet, first_slot) for z in sorted({str(z) for z in zones})}


def local_hours(slot_starts: list[datetime], tz_names: np.ndarray) -> np.ndarray:
    """Local hour [n, S] of each slot start for each user's time zone (DST-correct per slot)."""
    names, inverse = np.unique(tz_names.astype(str), return_inverse=True)
    table = np.array([[s.astimezone(ZoneInfo(z)).hour for s in slot_starts] for z in names], dtype=np.int8)
    return table[inverse.reshape(-1)]


def slot_starts(send_day: str) -> list[datetime]:
    start = datetime.fromisoformat(send_day).replace(tzinfo=timezone.utc)
    return [start + timedelta(hours=h) for h in range(SLOTS)]


def allowed_slots(starts: list[datetime], local_hour: np.ndarray, earliest_us: np.ndarray, end_us: np.ndarray,
                  quiet: tuple[int, int], first_slot: int) -> np.ndarray:
    """[n, S] bool: the slot starts at or after the user's earliest send time (a slot is delivered within
    its hour, so it must not start earlier), before the end of the user's local plan day, at or after the
    plan's first usable slot, and its local hour is outside quiet hours [start, end)."""
    start_us = np.array([int(s.timestamp() * 1_000_000) for s in starts], dtype=np.int64)
    ok = (start_us[None, :] >= earliest_us[:, None]) & (start_us[None, :] < end_us[:, None]) & ~is_quiet(local_hour,
                                                                                                       quiet)
    ok[:, :first_slot] = False
    return ok


def slot_values(p_ref: np.ndarray, q: np.ndarray, ref_hour: np.ndarray, local_hour: np.ndarray,
                allowed: np.ndarray, elasticity: float, ref_share: np.ndarray | None = None) -> np.ndarray:
    """value[u, s] = sigmoid(logit(p_ref_u) + elasticity * (log q_u[h(s)] - log ref_share_u)), NaN where not
    allowed. ref_share: the activity share scoring assumed at the reference hour (the all-days profile's, when q
    is the send day's type's; default q_u[ref_u]). float32 to keep 1M x 24 at 96 MB."""
    rows = np.arange(len(p_ref))
    p = np.clip(p_ref.astype(np.float64), 1e-6, 1 - 1e-6)
    ref = q[rows, ref_hour] if ref_share is None else ref_share
    logit_ref = np.log(p / (1 - p)) - elasticity * np.log(ref)
    z = logit_ref[:, None] + elasticity * np.log(np.take_along_axis(q, local_hour.astype(np.int64), axis=1))
    v = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    v[~allowed] = np.nan
    return v


# ---- the assignment -----------------------------------------------------------------------------------
@dataclass
class Assignment:
    slot: np.ndarray              # int16 [n], -1 where not assigned
    reason: np.ndarray            # object [n], None where assigned, else NO_WINDOW / NO_CAPACITY
    value: np.ndarray             # float32 [n], expected opens of the chosen slot (0 where unassigned)
    explored: np.ndarray          # bool [n], the slot was drawn at random (exploration)
    propensity: np.ndarray        # float64 [n], P(this slot | the policy), for off-policy learning
    load: np.ndarray              # int64 [S]
    stats: dict = field(default_factory=dict)


def user_hash(user_ids: np.ndarray, salt: str) -> np.ndarray:
    """A stable pseudo-random uint64 per user for a salt (splitmix64 of the id xor the salt's digest)."""
    key = int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "little")
    h = (user_ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(key)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return h


def explorers(user_ids: np.ndarray, send_day: str, share: float) -> np.ndarray:
    """Deterministic per (user, day): a re-run of the same day explores the same users."""
    if share <= 0:
        return np.zeros(len(user_ids), dtype=bool)
    return (user_hash(user_ids, f"hermes-explore-{send_day}") % np.uint64(1_000_000)).astype(np.float64) \
        < share * 1_000_000


def _top2(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = np.arange(u.shape[0])
    a1 = np.argmax(u, axis=1)
    b1 = u[rows, a1].copy()
    u[rows, a1] = -np.inf
    b2 = u.max(axis=1)
    return a1, b1, b2


def _prices(w: np.ndarray, cap: np.ndarray, iters: int, tol: float) -> tuple[np.ndarray, int]:
    """Slot prices at which (nearly) no slot is wanted by more users than its capacity. w: -inf where not
    allowed. Damped Jacobi market clearing: each slot's target price is the (cap+1)-th largest surplus its
    users get from it over their best other slot."""
    n, s_count = w.shape
    lam = np.zeros(s_count, dtype=np.float32)
    for it in range(1, iters + 1):
        a1, b1, b2 = _top2(w - lam)
        # no slot at all is worth 0: when slots are short, a user whose every surplus is negative drops out
        b2 = np.maximum(b2, 0.0)
        load = np.bincount(a1[b1 > 0], minlength=s_count)
        over = load > cap
        slack = (load < cap) & (lam > tol)
        if not over.any() and not slack.any():
            return lam, it
        target = lam.copy()
        for s in np.flatnonzero(over | slack):
            other = np.where(a1 == s, b2, np.maximum(b1, 0.0))
            ok = np.isfinite(w[:, s])
            d = w[ok, s] - other[ok]          # surplus of slot s over the user's best alternative
            d = d[d > 0]
            k = int(cap[s])
            if len(d) > k:
                target[s] = np.partition(d, len(d) - k - 1)[len(d) - k - 1] if k > 0 else d.max()
            else:
                target[s] = 0.0
        lam = np.maximum(0.0, lam + 0.6 * (target - lam)).astype(np.float32)
        # a slot over capacity must end up at least at its clearing price: nudge past ties
        lam[over] = np.maximum(lam[over], target[over] * 0.999)
    return lam, iters


def assign(value: np.ndarray, capacity: np.ndarray, explore: np.ndarray | None = None, explore_share: float = 0.0,
           seed: int = 0, iters: int = 60, explore_weights: np.ndarray | None = None) -> Assignment:
    """One slot per user maximising the sum of `value` (NaN = not allowed) with at most capacity[s] users in
    slot s. Users in `explore` (drawn with probability `explore_share`) get a random allowed slot first, capacity
    permitting: uniformly, or with probability proportional to explore_weights[u, s] (finite and >= 0 on the allowed
    slots, else ValueError; e.g. the user's activity share at the slot's hour, > 0 everywhere, so an explored push
    still tends to land when they are about and every allowed hour keeps a chance). The propensity logged is the
    draw's."""
    n, s_count = value.shape
    cap = np.asarray(capacity, dtype=np.int64).copy()
    if cap.shape != (s_count,) or (cap < 0).any():
        raise ValueError(f"capacity must be {s_count} non-negative integers, got {capacity!r}")
    allowed = ~np.isnan(value)
    n_allowed = allowed.sum(axis=1)
    if explore_weights is not None:
        if explore_weights.shape != value.shape:
            raise ValueError(f"explore_weights has shape {explore_weights.shape}, value {value.shape}")
        w = np.where(allowed, explore_weights, 0)        # one [n, S] temporary (1M users: 144 MB in float32)
        weight_total = w.sum(axis=1, dtype=np.float64)
        bad = ~np.isfinite(weight_total) | (w.min(axis=1) < 0)
        del w
        if bad.any():
            raise ValueError(f"explore_weights: {int(bad.sum())} users have a negative or non-finite weight on an "
                             f"allowed slot (rule: weights are finite and >= 0)")
    has_window = n_allowed > 0
    slot = np.full(n, -1, dtype=np.int16)
    explored = np.zeros(n, dtype=bool)
    explore = np.zeros(n, dtype=bool) if explore is None else (explore & has_window)

    # exploration: a random allowed slot, taken out of capacity before the optimiser runs
    if explore.any():
        rng = np.random.default_rng(seed)
        idx = np.flatnonzero(explore)
        if explore_weights is None:
            r = rng.random((len(idx), s_count))
            r[~allowed[idx]] = -1.0
            pick = np.argmax(r, axis=1)
        else:
            pi = explore_draw(explore_weights[idx], allowed[idx])
            pick = np.minimum((np.cumsum(pi, axis=1) < rng.random((len(idx), 1))).sum(axis=1), s_count - 1)
            pick = np.where(allowed[idx, pick], pick, np.argmax(pi, axis=1))      # rounding at the top end
        order = rng.permutation(len(idx))          # who keeps a slot when explorers alone fill it
        taken = np.zeros(s_count, dtype=np.int64)
        for j in order:
            s = pick[j]
            if taken[s] < cap[s]:
                taken[s] += 1
                slot[idx[j]] = s
                explored[idx[j]] = True
        cap -= taken

    todo = has_window & ~explored
    w = np.where(allowed[todo], value[todo], -np.inf).astype(np.float32)
    lam, used_iters = _prices(w, cap, iters, tol=1e-7)
    u = w - lam
    slot_todo = np.full(len(w), -1, dtype=np.int16)
    # repair: keep each slot's capacity of users with the most surplus over their next best, move the rest
    pending = np.ones(len(w), dtype=bool)
    remaining = cap.copy()
    for _ in range(s_count + 1):
        if not pending.any():
            break
        cand = np.where(remaining[None, :] > 0, u, -np.inf)
        cand = np.where(pending[:, None], cand, -np.inf)
        a1, b1, b2 = _top2(cand.copy())
        live = pending & np.isfinite(b1)
        if not live.any():
            break
        with np.errstate(invalid="ignore"):
            surplus = np.where(np.isfinite(b2), b1 - b2, np.inf)
        # who keeps a contested slot: users the prices say should be served (b1 >= 0) first, by surplus
        surplus = np.where(b1 >= 0, surplus, b1 - 10.0)
        for s in range(s_count):
            who = np.flatnonzero(live & (a1 == s))
            if len(who) == 0:
                continue
            if len(who) > remaining[s]:
                keep = np.argsort(-surplus[who], kind="stable")[: remaining[s]]
                who = who[keep]
            slot_todo[who] = s
            pending[who] = False
            remaining[s] -= len(who)
    slot[np.flatnonzero(todo)] = slot_todo

    rows = np.arange(n)
    got = slot >= 0
    chosen_value = np.where(got, value[rows, np.maximum(slot, 0)], 0.0).astype(np.float32)
    reason = np.full(n, None, dtype=object)
    reason[~has_window] = NO_WINDOW
    reason[has_window & ~got] = NO_CAPACITY
    load = np.bincount(slot[got].astype(np.int64), minlength=s_count)
    if (load > np.asarray(capacity)).any():   # the one promise this function makes: never over capacity
        raise AssertionError(f"capacity exceeded: load {load.tolist()} vs {list(capacity)}")

    # propensity of the slot each user got: share/|allowed| for any slot + (1 - share) for the optimiser's
    opt_slot = slot.astype(np.int64)
    if explored.any():  # the slot the optimiser would have given an explorer, at the final prices
        opt_slot[explored] = np.argmax(np.where(allowed[explored], value[explored], -np.inf) - lam[None, :], axis=1)
    share = float(explore_share)
    if explore_weights is None:
        p_drawn = 1.0 / np.maximum(n_allowed, 1)
    else:
        chosen_w = np.where(got, explore_weights[np.arange(n), np.maximum(slot, 0)], 0.0).astype(np.float64)
        total = weight_total
        p_drawn = np.where(total > 0, chosen_w / np.where(total > 0, total, 1.0), 1.0 / np.maximum(n_allowed, 1))
    propensity = np.where(got, share * p_drawn + (1 - share) * (slot == opt_slot), 0.0)

    best_free = np.where(has_window, np.nanmax(np.where(allowed, value, -np.inf), axis=1), 0.0)
    unconstrained = float(best_free.sum())
    achieved = float(chosen_value.sum())
    # LP dual: sum_u max(0, max_s value - price) + sum_s price * capacity >= the best possible total
    surplus_u = np.maximum(u.max(axis=1), 0.0) if len(u) else np.zeros(0)
    dual = float(surplus_u.sum() + (lam.astype(np.float64) * cap).sum()) + float(chosen_value[explored].sum())
    stats = {
        "users": int(n), "assigned": int(got.sum()), "explored": int(explored.sum()),
        "exploration_cost": float(best_free[explored].sum() - chosen_value[explored].sum()),
        NO_WINDOW: int((~has_window).sum()), NO_CAPACITY: int((has_window & ~got).sum()),
        "expected_opens": achieved, "expected_opens_unconstrained": unconstrained,
        "loss_vs_unconstrained": (1 - achieved / unconstrained) if unconstrained > 0 else 0.0,
        "upper_bound": dual, "gap_to_upper_bound": (1 - achieved / dual) if dual > 0 else 0.0,
        "price_iterations": int(used_iters), "prices": [float(x) for x in lam],
    }
    return Assignment(slot, reason, chosen_value, explored, propensity, load, stats)


def explore_draw(weights: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """[n, S] the exploration's probability of each slot: weights over the allowed slots, normalised (uniform for a
    user whose weights are all 0)."""
    w = np.where(allowed, weights, 0.0).astype(np.float64)       # assign has checked them: finite, >= 0
    total = w.sum(axis=1, keepdims=True)
    uniform = allowed / np.maximum(allowed.sum(axis=1, keepdims=True), 1)
    return np.where(total > 0, w / np.where(total > 0, total, 1.0), uniform)


def fixed_hour(value: np.ndarray, local_hour: np.ndarray, hour: np.ndarray | int, capacity: np.ndarray,
               order: np.ndarray) -> Assignment:
    """Push 1.0: each user at one fixed local hour (the nearest allowed slot if that hour is not allowed);
    a full slot spills its overflow to the user's next allowed slot, in `order`, as a throttled queue would."""
    n, s_count = value.shape
    allowed = ~np.isnan(value)
    hour = np.broadcast_to(np.asarray(hour), (n,))
    dist = np.abs(((local_hour.astype(np.int64) - hour[:, None]) + 12) % 24 - 12).astype(np.float64)
    dist[~allowed] = np.inf
    target = np.argmin(dist + np.arange(s_count)[None, :] * 1e-3, axis=1)
    has_window = allowed.any(axis=1)
    target = np.where(has_window, target, -1)
    slot = np.full(n, -1, dtype=np.int16)
    remaining = np.asarray(capacity, dtype=np.int64).copy()
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    for s in range(s_count):
        who = np.flatnonzero(target == s)
        if len(who) == 0:
            continue
        who = who[np.argsort(rank[who], kind="stable")]
        fits, spill = who[: remaining[s]], who[remaining[s]:]
        slot[fits] = s
        remaining[s] -= len(fits)
        later = allowed[spill][:, s + 1:]
        if later.shape[1] == 0:
            target[spill] = -1
        else:
            target[spill] = np.where(later.any(axis=1), s + 1 + np.argmax(later, axis=1), -1)
    got = slot >= 0
    rows = np.arange(n)
    chosen = np.where(got, value[rows, np.maximum(slot, 0)], 0.0).astype(np.float32)
    reason = np.full(n, None, dtype=object)
    reason[~has_window] = NO_WINDOW
    reason[has_window & ~got] = NO_CAPACITY
    load = np.bincount(slot[got].astype(np.int64), minlength=s_count)
    stats = {"users": int(n), "assigned": int(got.sum()), "explored": 0, NO_WINDOW: int((~has_window).sum()),
             NO_CAPACITY: int((has_window & ~got).sum()), "expected_opens": float(chosen.sum())}
    return Assignment(slot, reason, chosen, np.zeros(n, dtype=bool), got.astype(np.float64), load, stats)
