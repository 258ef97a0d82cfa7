"""Cold start: the prior policy, when the history is too thin to train, and how the gate hands over."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.pairs import FEATURES
from training.dataset import TrainingSet


def _examples(days: list[int], n_per_day: int, rate: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(days) * n_per_day
    df = pd.DataFrame(rng.random((n, len(FEATURES))), columns=list(FEATURES))
    df["day"] = np.repeat(days, n_per_day)
    df["label"] = (rng.random(n) < rate).astype(int)
    return df


def _ts(df: pd.DataFrame, split: int) -> TrainingSet:
    return TrainingSet(train=df[df.day < split].reset_index(drop=True), holdout=df[df.day >= split].reset_index(drop=True),
                       scene_codes={"a": 0}, first_day="2026-10-01", split_day="2026-10-20", last_day="2026-10-23")


def test_the_prior_ranks_by_its_written_coefficients_and_is_calibrated_to_what_history_there_is():
    from training.prior import COEFFICIENTS, TYPICAL, prior_estimator

    est = prior_estimator(0.05)
    typical = np.array([[TYPICAL.get(f, 0.0) for f in FEATURES]])
    assert est.predict_proba(typical)[0, 1] == pytest.approx(0.05)
    more_interest = typical.copy()
    more_interest[0, FEATURES.index("aff_share")] += 0.5
    fatigued = typical.copy()
    fatigued[0, FEATURES.index("u_pushes_1d")] += 2
    assert est.predict_proba(more_interest)[0, 1] > 0.05 > est.predict_proba(fatigued)[0, 1]
    assert est.coef_[0, FEATURES.index("scene_code")] == 0 and len(COEFFICIENTS) == (est.coef_ != 0).sum()
    # a thin history: the intercept makes the mean prediction its open rate
    df = _examples([1, 2], 300, 0.12)
    X, y = df[list(FEATURES)].to_numpy(), df["label"].to_numpy()
    cal = prior_estimator(0.05, X, y)
    assert cal.predict_proba(X)[:, 1].mean() == pytest.approx(y.mean(), abs=1e-5)
    assert (cal.coef_ == est.coef_).all()


def test_a_thin_history_is_named_and_a_young_one_is_split_at_its_newest_day():
    from training.train import history_shortfall, young_history_split

    empty = _ts(_examples([], 0, 0.1), 20)
    assert "0 opens in 0 pushed materials" in history_shortfall(empty, 200, 50)
    assert young_history_split(empty) is None
    # three days of pushes, all inside the usual 4 holdout days: nothing to train on ...
    young = _ts(_examples([20, 21, 22], 2000, 0.1), 20)
    assert "training.min_train_opens 200" in history_shortfall(young, 200, 50)
    # ... until the newest day is the holdout
    split = young_history_split(young)
    assert set(split.holdout.day) == {22} and set(split.train.day) == {20, 21}
    assert split.split_day == "1970-01-23" and len(split.train) + len(split.holdout) == 6000
    assert history_shortfall(split, 200, 50) is None


def test_the_gate_lets_a_prior_plan_only_until_a_trained_model_beats_it(tmp_path):
    import mlflow
    from sklearn.linear_model import LogisticRegression

    from training.prior import POLICY_TAG, PRIOR, prior_estimator
    from training.registry import CHAMPION, FEATURES_TAG, MODEL_NAME, champion_policy, configure_mlflow, gate, gate_prior

    configure_mlflow(f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "artifacts")
    client = mlflow.MlflowClient()

    def register(est, policy=None):
        with mlflow.start_run():
            info = mlflow.sklearn.log_model(est, name="model")
        v = mlflow.register_model(info.model_uri, MODEL_NAME, tags={POLICY_TAG: policy} if policy else None)
        return str(v.version)

    v1 = register(prior_estimator(0.05), PRIOR)
    d = gate_prior(v1)
    assert d.decision == "promoted" and d.reason.startswith("no champion yet") and champion_policy() == (v1, PRIOR)
    v2 = register(prior_estimator(0.05), PRIOR)
    assert gate_prior(v2).decision == "promoted" and champion_policy() == (v2, PRIOR)
    # a trained model that ranks the holdout better than the prior takes over through the usual gate
    df = _examples([1], 4000, 0.1, seed=3)
    X = df[list(FEATURES)].to_numpy()
    y = (X[:, FEATURES.index("i_price_rel")] + 0.3 * np.random.default_rng(1).random(len(X)) > 0.9).astype(int)
    trained = LogisticRegression(max_iter=500).fit(X, y)
    v3 = register(trained)
    from sklearn.metrics import roc_auc_score

    d = gate(v3, float(roc_auc_score(y, trained.predict_proba(X)[:, 1])), X, y, 0.002)
    assert d.decision == "promoted" and d.champion_version == v2 and champion_policy() == (v3, "trained")
    # a later thin night's prior stays beside the trained champion
    v4 = register(prior_estimator(0.05), PRIOR)
    d = gate_prior(v4)
    assert d.decision == "held" and str(client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version) == v3
    # ... unless that champion reads another feature set than this code computes: it cannot plan, the prior does
    client.set_model_version_tag(MODEL_NAME, v3, FEATURES_TAG, "u_opens_7d,scene_code")
    v5 = register(prior_estimator(0.05), PRIOR)
    d = gate_prior(v5)
    assert d.decision == "promoted" and f"replaces trained version {v3}, which reads another feature set" in d.reason
    assert champion_policy() == (v5, PRIOR)


def test_the_feed_recalibration_is_fitted_on_the_holdouts_pushes_at_the_feeds_level():
    """A push is opened once, whatever its feed: the plan's estimate is its lead item's (the max over the feed), and
    the recalibration maps that to how the holdout's pushes turned out."""
    from training.train import feed_recalibration

    class Fixed:                                 # predicts the first feature as P(open)
        def predict_proba(self, X):
            return np.column_stack([1 - X[:, 0], X[:, 0]])

    rng = np.random.default_rng(4)
    n = 6000
    lead = rng.uniform(0.05, 0.3, n)
    truth = 1 / (1 + np.exp(-(0.7 + np.log(lead / (1 - lead)))))   # the pushes open more than the lead item says
    opened = rng.random(n) < truth
    rows = []
    for i in range(n):                           # three items per push: the lead and two weaker ones
        for p in (lead[i], lead[i] / 2, lead[i] / 3):
            rows.append({"push_id": f"p{i}", "day": 20 + i % 2, "label": int(opened[i]), "x": p})
    holdout = pd.DataFrame(rows)
    for f in FEATURES:
        holdout[f] = holdout["x"] if f == FEATURES[0] else 0.0
    r = feed_recalibration(Fixed(), holdout)
    assert r.pushes == n and r.opens == opened.sum() and r.nights == 2
    assert abs(r.a - 0.7) < 0.15 and abs(r.b - 1.0) < 0.15
    assert abs(r.apply(lead).mean() - opened.mean()) < 0.01 < abs(lead.mean() - opened.mean())
    assert feed_recalibration(Fixed(), holdout.iloc[:0]).b == 1.0


def test_once_enough_of_hermes_own_pushes_are_in_the_holdout_they_alone_set_the_calibration():
    """The older policy's one-item pushes open as the model says; Hermes' own feeds open more (odds x e^0.7). With
    600+ of its own pushes in the holdout the recalibration is theirs, not a blend; with too few it is everyone's."""
    from training.train import RECAL_MIN_PUSHES, feed_recalibration

    class Fixed:
        def predict_proba(self, X):
            return np.column_stack([1 - X[:, 0], X[:, 0]])

    rng = np.random.default_rng(5)

    def pushes(n, lift, policy, first):
        p = rng.uniform(0.05, 0.3, n)
        y = rng.random(n) < 1 / (1 + np.exp(-(lift + np.log(p / (1 - p)))))
        return pd.DataFrame({"push_id": [f"{policy}{first + i}" for i in range(n)], "day": 20, "label": y.astype(int),
                             "x": p, "policy": policy})

    old, mine = pushes(4000, 0.0, "baseline", 0), pushes(3000, 0.7, "hermes", 0)
    fitted = {}
    for n_mine in (3000, RECAL_MIN_PUSHES - 1):
        holdout = pd.concat([old, mine.iloc[:n_mine]], ignore_index=True)
        for f in FEATURES:
            holdout[f] = holdout["x"] if f == FEATURES[0] else 0.0
        fitted[n_mine] = feed_recalibration(Fixed(), holdout)
    own, blend = fitted[3000], fitted[RECAL_MIN_PUSHES - 1]
    assert own.pushes == 3000 and "planned by Hermes (4000 pushes of other policies" in own.reason
    assert abs(own.a - 0.7) < 0.2 and abs(own.b - 1.0) < 0.2
    assert abs(own.apply(mine["x"].to_numpy()).mean() - mine["label"].mean()) < 0.015
    assert blend.pushes == 4000 + RECAL_MIN_PUSHES - 1 and "planned by Hermes" not in blend.reason
    assert blend.apply(mine["x"].to_numpy()).mean() < mine["label"].mean() - 0.03    # the old policy's level


def test_hermes_own_feeds_of_several_lengths_teach_the_recalibration_what_a_longer_feed_adds():
    """The holdout holds one row per item a push showed: Hermes' own feeds of 1-5 items, which open more the longer
    they are (+0.5 log-odds per log item over their lead item), give the recalibration that term; the one-item
    pushes of the older policy alone give none."""
    from training.train import feed_recalibration

    class Fixed:
        def predict_proba(self, X):
            return np.column_stack([1 - X[:, 0], X[:, 0]])

    rng = np.random.default_rng(8)
    n = 8000
    lead, k = rng.uniform(0.05, 0.3, n), rng.integers(1, 6, n)
    opened = rng.random(n) < 1 / (1 + np.exp(-(np.log(lead / (1 - lead)) + 0.5 * np.log(k))))
    rows = [{"push_id": f"h{i}", "day": 20, "label": int(opened[i]), "x": lead[i] / (j + 1), "policy": "hermes"}
            for i in range(n) for j in range(k[i])]
    old = [{"push_id": f"b{i}", "day": 20, "label": int(rng.random() < 0.1), "x": 0.1, "policy": "baseline"}
           for i in range(3000)]
    for frame, want in ((pd.DataFrame(rows + old), 0.5), (pd.DataFrame(old), 0.0)):
        for f in FEATURES:
            frame[f] = frame["x"] if f == FEATURES[0] else 0.0
        r = feed_recalibration(Fixed(), frame)
        assert abs(r.c - want) < 0.1 and (r.c == 0.0) == (want == 0.0), r
    assert r.pushes == 3000 and "per log item" not in r.reason


def test_hermes_own_pushes_teach_the_recalibration_each_scenes_level_and_the_version_carries_it():
    """Hermes' own pushes of a scene the model under-rates (odds x e^1.0) and of one it rates right: the recalibration
    fitted on the holdout carries the gap as scene offsets, and so does the version's tag (read back by the plan)."""
    import json

    from training.train import SCENE_RECAL_TAG, _recal_tags, feed_recalibration

    class Fixed:
        def predict_proba(self, X):
            return np.column_stack([1 - X[:, 0], X[:, 0]])

    rng = np.random.default_rng(9)
    n = 6000
    lead = rng.uniform(0.05, 0.3, n)
    scene = np.where(np.arange(n) % 4 == 0, "price_drop_fav", "guess_you_like")
    lift = np.where(scene == "price_drop_fav", 1.0, 0.0)
    opened = rng.random(n) < 1 / (1 + np.exp(-(np.log(lead / (1 - lead)) + lift)))
    frame = pd.DataFrame([{"push_id": f"h{i}", "day": 20, "label": int(opened[i]), "x": lead[i] / (j + 1),
                           "policy": "hermes", "scene_id": scene[i]} for i in range(n) for j in range(2)])
    for f in FEATURES:
        frame[f] = frame["x"] if f == FEATURES[0] else 0.0
    r = feed_recalibration(Fixed(), frame)
    assert abs(r.scene["price_drop_fav"] - r.scene["guess_you_like"] - 1.0) < 0.2, r
    tag = json.loads(_recal_tags(r)[SCENE_RECAL_TAG])
    assert tag == {k: round(v, 4) for k, v in r.scene.items()}


def test_the_interest_term_is_learnt_from_hermes_own_pushes_only():
    """Hermes' own feeds holding an item of the user's interest open e^0.8 times the odds the model says: the
    recalibration carries e. The older policy's pushes, where such an item is a coincidence (here they open less
    than the model says), give none: a history's recalibration is its level and slope."""
    from training.train import INTEREST_TAG, _recal_tags, feed_recalibration

    class Fixed:
        def predict_proba(self, X):
            return np.column_stack([1 - X[:, 0], X[:, 0]])

    rng = np.random.default_rng(13)

    def pushes(n, lift, policy):
        lead = rng.uniform(0.05, 0.3, n)
        wanted = (rng.random(n) < 0.3).astype(int)
        y = rng.random(n) < 1 / (1 + np.exp(-(np.log(lead / (1 - lead)) + lift * wanted)))
        # two items a push: the interest flag on the second (a feed holds such an item if any of its items is one)
        return pd.DataFrame([{"push_id": f"{policy}{i}", "day": 20, "label": int(y[i]), "x": lead[i] / (j + 1),
                              "policy": policy, "interest": int(wanted[i] and j == 1)} for i in range(n) for j in range(2)])

    for frame, want in ((pd.concat([pushes(3000, 0.8, "hermes"), pushes(3000, -0.5, "baseline")]), 0.8),
                        (pushes(4000, -0.5, "baseline"), 0.0)):
        for f in FEATURES:
            frame[f] = frame["x"] if f == FEATURES[0] else 0.0
        r = feed_recalibration(Fixed(), frame)
        assert abs(r.interest - want) < 0.15 and (r.interest == 0.0) == (want == 0.0), r
        assert float(_recal_tags(r)[INTEREST_TAG]) == round(r.interest, 6)


def test_a_champion_kept_by_the_gate_plans_with_the_calibration_refitted_on_that_nights_holdout(tmp_path):
    """jobs.train.gate writes the kept champion's refit into the night's gate report; windows (and the stream) use it
    for that version on that night only."""
    import json

    from core.warehouse import Warehouse
    from jobs.windows import version_recalibration

    wh = Warehouse(tmp_path / "warehouse")
    report = wh.report("training", "2026-10-30", "gate")
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"decision": "held", "champion_recalibration": {
        "version": "3", "ds": "2026-10-30", "a": 0.61, "b": 0.93, "pushes": 2400, "opens": 480, "nights": 1,
        "reason": "fitted on 2400 pushes (480 opens) of the last 1 night(s) planned by Hermes"}}))
    r = version_recalibration("3", wh, "2026-10-30")
    assert (r.a, r.b, r.c, r.pushes, r.opens) == (0.61, 0.93, 0.0, 2400, 480)      # a report from before c: none
    assert r.reason.startswith("version 3 kept as champion, refitted on ds=2026-10-30's holdout")
    assert r.apply(np.array([0.1]))[0] > 0.1
    # with the feed-length term: a four-item feed's estimate moves by c log 4 more than a one-item one
    report.write_text(json.dumps({"decision": "held", "champion_recalibration": {
        "version": "3", "ds": "2026-10-30", "a": 0.0, "b": 1.0, "c": 0.4, "pushes": 2400, "opens": 480, "nights": 1,
        "reason": "fitted"}}))
    r = version_recalibration("3", wh, "2026-10-30")
    one, four = r.apply(np.array([0.1]), np.array([1]))[0], r.apply(np.array([0.1]), np.array([4]))[0]
    assert r.c == 0.4 and one == pytest.approx(0.1) and np.log(four / (1 - four)) - np.log(1 / 9) == pytest.approx(0.4 * np.log(4))
    assert r.scene == {}                                                            # a report from before them: none
    # with scene offsets: a feed of a scene with one moves by it, another scene's does not
    report.write_text(json.dumps({"decision": "held", "champion_recalibration": {
        "version": "3", "ds": "2026-10-30", "a": 0.0, "b": 1.0, "c": 0.0, "scene": {"price_drop_fav": 1.1},
        "pushes": 2400, "opens": 480, "nights": 1, "reason": "fitted"}}))
    r = version_recalibration("3", wh, "2026-10-30")
    fav, other = r.apply(np.array([0.1, 0.1]), scenes=np.array(["price_drop_fav", "guess_you_like"], dtype=object))
    assert np.log(fav / (1 - fav)) - np.log(1 / 9) == pytest.approx(1.1) and other == pytest.approx(0.1)


def test_the_recalibration_carries_the_models_own_fatigue_effect_and_the_version_tags_it(tmp_path):
    """feed_recalibration measures the model's log-odds per push the day before and per push in 7 days (for the
    logistic model: its coefficients) and fits the slope around them; the version's tags carry both terms, which the
    plan reads back (jobs.windows.version_recalibration)."""
    from training.train import FATIGUE_TAGS, _recal_tags, fatigue_elasticities, feed_recalibration

    j1, j7 = FEATURES.index("u_pushes_1d"), FEATURES.index("u_pushes_7d")

    class Logistic:                               # log-odds: 2 x the first feature - 0.5 per push yesterday - 0.08 in 7 d
        def predict_proba(self, X):
            z = -2.0 + 2.0 * X[:, 0] - 0.5 * X[:, j1] - 0.08 * X[:, j7]
            p = 1 / (1 + np.exp(-z))
            return np.column_stack([1 - p, p])

    rng = np.random.default_rng(12)
    n = 8000
    frame = pd.DataFrame({"push_id": [f"h{i}" for i in range(n)], "day": 20, "policy": "hermes",
                          "scene_id": "guess_you_like"})
    for f in FEATURES:
        frame[f] = 0.0
    frame[FEATURES[0]] = rng.normal(0.0, 1.0, n)
    frame["u_pushes_1d"] = (rng.random(n) < 0.4).astype(float)
    frame["u_pushes_7d"] = rng.poisson(2.0, n).astype(float)
    z = -2.0 + 1.0 * frame[FEATURES[0]] - 0.5 * frame["u_pushes_1d"] - 0.08 * frame["u_pushes_7d"]
    frame["label"] = (rng.random(n) < 1 / (1 + np.exp(-(z + 0.3)))).astype(int)   # the ranking half as steep
    e1, e7 = fatigue_elasticities(Logistic(), frame[list(FEATURES)].to_numpy(np.float64))
    assert abs(e1 + 0.5) < 1e-6 and abs(e7 + 0.08) < 1e-6
    r = feed_recalibration(Logistic(), frame)
    assert (round(r.fatigue_1d, 6), round(r.fatigue_7d, 6)) == (-0.5, -0.08) and abs(r.b - 0.5) < 0.1, r
    tags = _recal_tags(r)
    assert float(tags[FATIGUE_TAGS[0]]) == round(r.fatigue_1d, 6) and float(tags[FATIGUE_TAGS[1]]) == round(r.fatigue_7d, 6)


def test_the_plan_reads_each_users_push_load_for_the_fatigue_terms_from_the_score_stages_sides(tmp_path):
    """jobs.windows.push_load: the pushes before the plan day scoring saw (features/sides_user), aligned with the
    planned users (0 for a user without a row); nothing read when the recalibration has no fatigue terms; a clear
    error naming the table when the sides are missing. A kept champion's refit in the gate report carries the terms."""
    import json

    import pyarrow as pa

    from core.warehouse import Warehouse
    from features.windows import Recalibration
    from jobs.windows import push_load, version_recalibration

    wh = Warehouse(tmp_path / "warehouse")
    r = Recalibration(a=0.2, b=0.6, fatigue_1d=-0.4, fatigue_7d=-0.1)
    with pytest.raises(ValueError, match=r"features/sides_user ds=2026-10-30 is missing"):
        push_load(wh, "2026-10-30", np.array([1, 2]), r)
    assert push_load(wh, "2026-10-30", np.array([1, 2]), Recalibration(a=0.2, b=0.6)) is None
    wh.write_arrow(pa.table({"user_id": [7, 5], "pushes_recent_1d": [1, 0], "pushes_7d": [4, 2]}),
                   "features/sides_user", "2026-10-30", "cfg")
    p1, p7 = push_load(wh, "2026-10-30", np.array([5, 9, 7]), r)
    assert p1[:, 0].tolist() == [0.0, 0.0, 1.0] and p7[:, 0].tolist() == [2.0, 0.0, 4.0] and p1.shape == (3, 1)
    report = wh.report("training", "2026-10-30", "gate")
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps({"decision": "held", "champion_recalibration": {"version": "3", **r.as_dict()}}))
    back = version_recalibration("3", wh, "2026-10-30")
    assert (back.b, back.fatigue_1d, back.fatigue_7d) == (0.6, -0.4, -0.1)


def test_the_plans_values_carry_each_feeds_length_scene_and_users_push_load_through_the_recalibration(tmp_path):
    """jobs.windows.recalibrated, what plan_policy values every slot with: each row gets its own feed length, scene
    offset and its user's pushes before the plan day (features/sides_user), on every slot; no recalibration: raw."""
    import pyarrow as pa

    from core.warehouse import Warehouse
    from features.windows import Recalibration
    from jobs.windows import recalibrated

    wh = Warehouse(tmp_path / "warehouse")
    wh.write_arrow(pa.table({"user_id": [7, 5], "pushes_recent_1d": [1, 0], "pushes_7d": [4, 2]}),
                   "features/sides_user", "2026-10-30", "cfg")
    table = pa.table({"user_id": pa.array([5, 7, 9], pa.int64()),
                      "scene_id": ["guess_you_like", "guess_you_like", "top_picks"],
                      "item_ids": pa.array([[1, 2, 3], [1], None], pa.list_(pa.int64()))})
    raw = np.full((3, 24), 0.2)
    r = Recalibration(a=0.1, b=0.6, c=0.3, scene={"top_picks": 0.5}, fatigue_1d=-0.4, fatigue_7d=-0.1)
    got = recalibrated(raw, table, wh, "2026-10-30", r)
    logit = np.log(0.2 / 0.8)
    load = np.array([-0.1 * 2, -0.4 * 1 - 0.1 * 4, 0.0])                 # users 5, 7 and 9 (no row: no pushes)
    z = 0.1 + 0.6 * logit + 0.4 * load + 0.3 * np.log([3.0, 1.0, 1.0]) + np.array([0.0, 0.0, 0.5])
    assert got.shape == (3, 24) and np.allclose(got, (1 / (1 + np.exp(-z)))[:, None])
    assert got[1, 0] < got[0, 0]                   # the heavier push load and the shorter feed
    assert recalibrated(raw, table, wh, "2026-10-30", None) is raw
    # a feed holding an item of its user's interest (item_interest: one flag per item) gets the term e; one without,
    # or without flags (a null feed), none
    wanted = table.append_column("item_interest", pa.array([[0, 1, 0], [0], None], pa.list_(pa.int32())))
    e = Recalibration(a=0.1, b=0.6, c=0.3, scene={"top_picks": 0.5}, fatigue_1d=-0.4, fatigue_7d=-0.1, interest=0.7)
    with_e = recalibrated(raw, wanted, wh, "2026-10-30", e)
    z_e = z + 0.7 * np.array([1.0, 0.0, 0.0])
    assert np.allclose(with_e, (1 / (1 + np.exp(-z_e)))[:, None])
    assert np.allclose(recalibrated(raw, table, wh, "2026-10-30", e), got)     # a plan without the flags: none
