"""Train the CTR model for a run date, log everything to MLflow, register the version, run the gate.

Called by jobs.train with a TrainingSet already built by Spark; everything here is in-process pandas /
scikit-learn on the (small) training set.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from features.pairs import FEATURES
from training.dataset import TrainingSet, feature_matrix
from training.model import choose_kind, evaluate, fit_candidates
from training.oracle import attainable_probabilities, true_probabilities
from training.registry import FEATURES_TAG, MODEL_NAME, SKOPS_TRUSTED, gate, log_decision, reads_current_features

log = logging.getLogger(__name__)


def _plots(folder: Path, y: np.ndarray, p: np.ndarray, p_oracle: np.ndarray | None, p_attainable: np.ndarray | None,
           importance: pd.Series) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    from sklearn.metrics import roc_auc_score

    for label, scores in (("model", p), ("oracle (true P)", p_oracle),
                          ("attainable oracle (user bias learnt)", p_attainable)):
        if scores is not None:
            fpr, tpr, _ = roc_curve(y, scores)
            ax.plot(fpr, tpr, label=f"{label}, AUC {roc_auc_score(y, scores):.3f}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC on holdout")
    ax.legend()
    fig.savefig(folder / "roc.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    order = np.argsort(p)
    bins = [b for b in np.array_split(order, 15) if len(b)]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([p[b].mean() for b in bins], [y[b].mean() for b in bins], "o-", label="model")
    hi = max(max(p[b].mean() for b in bins), max(y[b].mean() for b in bins)) * 1.05
    ax.plot([0, hi], [0, hi], "k--", lw=0.8)
    ax.set(xlabel="predicted open probability", ylabel="observed open rate", title="Calibration (15 equal-count bins)")
    fig.savefig(folder / "calibration.png", dpi=90, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    importance.sort_values().plot.barh(ax=ax)
    ax.set(title="Feature importance (holdout AUC drop when permuted)")
    fig.savefig(folder / "feature_importance.png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def _importance(est, Xh: np.ndarray, yh: np.ndarray) -> pd.Series:
    from sklearn.inspection import permutation_importance

    rows = np.random.default_rng(0).choice(len(yh), size=min(len(yh), 20_000), replace=False)
    r = permutation_importance(est, Xh[rows], yh[rows], scoring="roc_auc", n_repeats=3, random_state=0)
    return pd.Series(r.importances_mean, index=list(FEATURES))


TIMING_TAG = "timing_elasticity"
RECAL_TAGS = ("recalibration_a", "recalibration_b")
BREADTH_TAG = "recalibration_c"    # the feed-length term; versions registered before it have none (read as 0)
SCENE_RECAL_TAG = "recalibration_scene"   # the scenes' own offsets (JSON {scene: log-odds}); none before it: {}
# the model's own fatigue effect, kept out of the recalibration's slope (features.windows.Recalibration); read as 0
# on versions registered before it
FATIGUE_TAGS = ("recalibration_fatigue_1d", "recalibration_fatigue_7d")
INTEREST_TAG = "recalibration_interest"   # e, a feed holding an item of the user's interest; read as 0 before it
PUSH_LOAD = ("u_pushes_1d", "u_pushes_7d")
ELASTICITY_ROWS = 50_000
# the scenes a version's fit saw, with their training pushes (JSON): the plan report names the planned scenes the
# model never saw, which it scores at the history's average scene level (training.model.centre_scene_effects)
HISTORY_SCENES_TAG = "history_scenes"
HISTORY_SCENES_MAX = 40            # the most pushed scene ids kept in the tag (MLflow caps a tag's value at 5000 chars)


def history_scenes_tag(train: pd.DataFrame) -> str:
    """{scene_id: training pushes} of the HISTORY_SCENES_MAX most pushed scenes, as the version's tag value."""
    if not len(train) or "scene_id" not in train.columns:
        return "{}"
    pushes = (train.drop_duplicates("push_id") if "push_id" in train.columns else train)["scene_id"].value_counts()
    return json.dumps({str(k): int(v) for k, v in pushes.head(HISTORY_SCENES_MAX).items()}, separators=(",", ":"))


OWN_PLANS = "hermes"          # push_log.policy of the pushes Hermes' nightly plans sent (jobs/batches.py)
RECAL_MIN_PUSHES, RECAL_MIN_OPENS = 500, 50


def feed_recalibration(est, holdout: pd.DataFrame):
    """Platt scaling of this model's feed-level estimate (the max over a push's items, what the plan's expected_open
    is) on the holdout's pushes: once Hermes has pushed, on its own plans' pushes alone (push_log.policy 'hermes')
    as soon as the holdout holds enough of them — their multi-item feeds, hours and scenes are the extrapolations
    the model is asked for. features.windows.Recalibration; identity when the holdout is too small."""
    from features.windows import Recalibration, fit_recalibration

    if holdout.empty:
        return Recalibration()
    X = feature_matrix(holdout)
    p = est.predict_proba(X)[:, 1]
    fatigue = fatigue_elasticities(est, X)
    own = (holdout["policy"] == OWN_PLANS).to_numpy() if "policy" in holdout else np.zeros(len(holdout), dtype=bool)
    scene = holdout["scene_id"].astype(str).to_numpy() if "scene_id" in holdout else np.full(len(holdout), "")
    interest = holdout["interest"].to_numpy() if "interest" in holdout else np.zeros(len(holdout), dtype=np.int64)
    g = pd.DataFrame({"push_id": holdout["push_id"].to_numpy(), "p": p, "y": holdout["label"].to_numpy(), "own": own,
                      "day": holdout["day"].to_numpy(), "scene": scene, "interest": interest,
                      "p1": X[:, list(FEATURES).index(PUSH_LOAD[0])], "p7": X[:, list(FEATURES).index(PUSH_LOAD[1])]}) \
        .groupby("push_id").agg(p=("p", "max"), y=("y", "max"), own=("own", "max"), day=("day", "first"),
                                scene=("scene", "first"), n=("p", "size"), p1=("p1", "first"),
                                p7=("p7", "first"), interest=("interest", "max"))   # one row per item it showed
    mine = g[g["own"]]
    if len(mine) >= RECAL_MIN_PUSHES and mine["y"].sum() >= RECAL_MIN_OPENS:
        # Hermes' own plans are what the model will be asked to extrapolate to (its feeds, hours and scenes): when
        # the holdout holds enough of them, they alone set the calibration; the older policy's pushes would pull it
        # toward a format the plan no longer sends. Their feeds' lengths vary, so they also say what a longer feed
        # adds to its lead item (the term c log n; the one-item pushes of Push 1.0 cannot), and what each of its scenes
        # is worth against the model's extrapolation (d[scene]: a scene the history never held, or one about an item
        # the user favourited, which a history of popular items cannot show), and what a feed holding an item of the
        # user's interest is worth, whatever its scene (e)
        r = fit_recalibration(mine["p"].to_numpy(), mine["y"].to_numpy().astype(bool), nights=int(mine["day"].nunique()),
                              min_opens=RECAL_MIN_OPENS, min_pushes=RECAL_MIN_PUSHES, n_items=mine["n"].to_numpy(),
                              scenes=mine["scene"].to_numpy(), pushes=(mine["p1"].to_numpy(), mine["p7"].to_numpy()),
                              fatigue=fatigue, interest=mine["interest"].to_numpy())
        r.reason += f" planned by Hermes ({len(g) - len(mine)} pushes of other policies in the holdout left out)"
        return r
    # the history's own level and slope only: what the plan's own format adds (c: longer feeds, d: its scenes, e: feeds
    # of the user's interest, which the plan seeks out) is for its own pushes to show. Among another policy's pushes
    # an item of interest is a coincidence, and e fitted there measures how the model errs on those few pairs, not
    # what seeking them out is worth (on random 212*, 10k users, e = -0.32 from Push 1.0's holdout: night 1's plan
    # then demoted the very pushes the truth rewards, share of the oracle's lift 43 -> 38 %)
    return fit_recalibration(g["p"].to_numpy(), g["y"].to_numpy().astype(bool), nights=int(holdout["day"].nunique()),
                             min_opens=RECAL_MIN_OPENS, min_pushes=RECAL_MIN_PUSHES,
                             pushes=(g["p1"].to_numpy(), g["p7"].to_numpy()), fatigue=fatigue)


def _recal_tags(recal) -> dict:
    return {RECAL_TAGS[0]: f"{recal.a:.6f}", RECAL_TAGS[1]: f"{recal.b:.6f}", BREADTH_TAG: f"{recal.c:.6f}",
            SCENE_RECAL_TAG: scene_offsets_tag(recal.scene), FATIGUE_TAGS[0]: f"{recal.fatigue_1d:.6f}",
            FATIGUE_TAGS[1]: f"{recal.fatigue_7d:.6f}", INTEREST_TAG: f"{recal.interest:.6f}"}


def scene_offsets_tag(scene: dict) -> str:
    """The recalibration's scene offsets as a tag value: the HISTORY_SCENES_MAX largest in size (MLflow caps a tag's
    value at 5000 characters; a scene left out is read as 0: no offset of its own)."""
    keep = sorted(scene.items(), key=lambda kv: -abs(kv[1]))[:HISTORY_SCENES_MAX]
    return json.dumps({k: round(float(v), 4) for k, v in sorted(keep)}, separators=(",", ":"))


def _slope(est, Xh: np.ndarray, feature: str, half: float = 0.5) -> float:
    """The model's log-odds per unit of one feature, averaged over the rows: a finite difference of +-half around
    each (exact for the logistic model; the average slope for tree models)."""
    j = list(FEATURES).index(feature)
    lo, hi = Xh.copy(), Xh.copy()
    lo[:, j] -= half
    hi[:, j] += half
    eps = 1e-6
    logit = lambda p: np.log(np.clip(p, eps, 1 - eps) / np.clip(1 - p, eps, 1))  # noqa: E731
    return float(np.mean(logit(est.predict_proba(hi)[:, 1]) - logit(est.predict_proba(lo)[:, 1])) / (2 * half))


def fatigue_elasticities(est, Xh: np.ndarray) -> tuple[float, float]:
    """The model's log-odds per push the user had the day before and per push in the 7 days before (u_pushes_1d,
    u_pushes_7d), averaged over the holdout: the part of an estimate the recalibration's slope leaves unscaled."""
    if not len(Xh):
        return 0.0, 0.0
    if len(Xh) > ELASTICITY_ROWS:        # an average slope: a seeded sample of the rows measures it as well
        Xh = Xh[np.sort(np.random.default_rng(0).choice(len(Xh), ELASTICITY_ROWS, replace=False))]
    return _slope(est, Xh, PUSH_LOAD[0]), _slope(est, Xh, PUSH_LOAD[1])


def timing_elasticity(est, Xh: np.ndarray) -> float:
    """How much the model's log-odds move per unit of `hour_share_log` (log of 24 x the share of a user's
    app opens in the send hour), averaged over the holdout. The send-window stage uses it to turn a user's hour
    profile into per-hour open probabilities without re-scoring every pair 24 times."""
    return _slope(est, Xh, "hour_share_log")


NOISE = {"verbose", "warm_start", "n_jobs", "copy", "memory", "steps", "categorical_features", "monotonic_cst",
         "interaction_cst", "class_weight", "scoring", "tol", "validation_fraction", "n_iter_no_change", "dual",
         "intercept_scaling", "multi_class", "fit_intercept", "solver", "l1_ratio"}


def hyperparameters(est) -> dict:
    """The estimator's own hyperparameters (the last step of a pipeline), without sklearn's plumbing."""
    last = est.steps[-1][1] if hasattr(est, "steps") else est
    return {k: v for k, v in last.get_params(deep=False).items()
            if k not in NOISE and isinstance(v, (int, float, str, bool)) and len(str(v)) < 100}


def train_and_register(ts: TrainingSet, ds: str, config_version: str, truth=None,
                       kinds=("logreg", "hgb"), force_kind: str | None = None, training_config: dict | None = None) -> dict:
    """Fit the candidates, keep one (training.model.choose_kind: the regression unless another is clearly better on
    the holdout), log it to MLflow and register a version.
    Promotion is the gate's decision (training.registry.gate), taken on the same holdout."""
    import mlflow
    from mlflow.models import infer_signature

    X, y = feature_matrix(ts.train), ts.train["label"].to_numpy()
    Xh, yh = feature_matrix(ts.holdout), ts.holdout["label"].to_numpy()
    fitted = fit_candidates(X, y, Xh, yh, kinds=(force_kind,) if force_kind else kinds)
    best, why_kind = choose_kind(yh, {k: e.predict_proba(Xh)[:, 1] for k, (e, _, _) in fitted.items()})
    log.info("train: keeping %s", why_kind)
    est, metrics, fit_seconds = fitted[best]
    from sklearn.metrics import roc_auc_score

    p = est.predict_proba(Xh)[:, 1]
    p_oracle = true_probabilities(ts.holdout, truth)
    # Oracle AUC: the best any model could do on this holdout, knowing the simulator's latent traits; the
    # attainable one learns the user's latent push bias from their own training pushes (training/oracle.py).
    oracle = float(roc_auc_score(yh, p_oracle)) if p_oracle is not None else None
    p_attainable = attainable_probabilities(ts.train, ts.holdout, truth)
    attainable = float(roc_auc_score(yh, p_attainable)) if p_attainable is not None else None

    with mlflow.start_run(run_name=f"ctr-{ds}") as run:
        mlflow.set_tags({"ds": ds, "config_version": config_version, "model_kind": best, "model_kind_reason": why_kind})
        mlflow.log_params({"model_kind": best, "features": ",".join(FEATURES), "train_first_day": ts.first_day,
                           "holdout_first_day": ts.split_day, "last_day": ts.last_day,
                           "train_rows": len(ts.train), "holdout_rows": len(ts.holdout),
                           "train_sample_rate": ts.sample_rate, "examples_before_sample": ts.examples_before_sample,
                           # pushes too recent for their label to be final are not in the set (training.dataset)
                           "open_window_hours": ts.open_window_hours, "immature_pushes_left_out": ts.immature_pushes,
                           "candidates": ",".join(fitted),
                           **{f"training.{k}": v for k, v in (training_config or {}).items()},
                           **{f"winner.{k}": v for k, v in hyperparameters(est).items()},
                           **{f"candidate.{kind}.{k}": v for kind, (e, _, _) in fitted.items() if kind != best
                              for k, v in hyperparameters(e).items()}})
        _log_datasets(ts, ds)
        elasticity = timing_elasticity(est, Xh)
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()}
                           | {"fit_seconds": fit_seconds, TIMING_TAG: elasticity,
                              # what centring the scene effects moved into the intercept (training.model)
                              "scene_effects_centred_by": getattr(est, "scene_effects_centred_by_", 0.0)})
        for kind, (_, m, secs) in fitted.items():
            mlflow.log_metrics({f"candidate_{kind}_auc": m["auc"], f"candidate_{kind}_log_loss": m["log_loss"],
                                f"candidate_{kind}_calibration_error": m["calibration_error"],
                                f"candidate_{kind}_fit_seconds": secs})
        if oracle is not None:
            mlflow.log_metrics({"oracle_auc": oracle, "auc_gap_to_oracle": oracle - metrics["auc"],
                                "oracle_auc_attainable": attainable,
                                "auc_gap_to_attainable": attainable - metrics["auc"]})
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            importance = _importance(est, Xh, yh)
            _plots(folder, yh, p, p_oracle, p_attainable, importance)
            importance.sort_values(ascending=False).to_csv(folder / "feature_importance.csv", header=["auc_drop"])
            summary = ts.summary() | {"feature_stats": ts.train[list(FEATURES)].describe().round(4).to_dict()}
            (folder / "training_data_summary.json").write_text(json.dumps(summary, indent=2, default=str))
            (folder / "scene_codes.json").write_text(json.dumps(ts.scene_codes, indent=2, sort_keys=True))
            mlflow.log_artifacts(str(folder))
        example = pd.DataFrame(Xh[:5], columns=list(FEATURES))
        info = mlflow.sklearn.log_model(
            est, name="model", signature=infer_signature(example, p[:5]), input_example=example,
            skops_trusted_types=SKOPS_TRUSTED if best == "hgb" else None)
        recal = feed_recalibration(est, ts.holdout)
        mlflow.log_metrics({"recalibration_a": recal.a, "recalibration_b": recal.b, "recalibration_c": recal.c,
                            "recalibration_scenes": len(recal.scene), FATIGUE_TAGS[0]: recal.fatigue_1d,
                            FATIGUE_TAGS[1]: recal.fatigue_7d, INTEREST_TAG: recal.interest})
        # the scenes' offsets by name (scene ids are free text, not all of them valid metric keys)
        mlflow.log_dict(recal.as_dict(), "recalibration.json")
        version = mlflow.register_model(info.model_uri, MODEL_NAME, tags={"ds": ds, "config_version": config_version,
                                                                          TIMING_TAG: f"{elasticity:.6f}",
                                                                          "model_kind": best,
                                                                          "holdout_auc": f"{metrics['auc']:.4f}",
                                                                          FEATURES_TAG: ",".join(FEATURES),
                                                                          HISTORY_SCENES_TAG: history_scenes_tag(ts.train),
                                                                          **_recal_tags(recal)})
        _describe_version(str(version.version), best, ts, metrics, oracle, fitted)
    return {"run_id": run.info.run_id, "version": str(version.version), "model_kind": best, "holdout": metrics,
            "oracle_auc": oracle, "oracle_auc_attainable": attainable, TIMING_TAG: elasticity,
            "recalibration": recal.as_dict(),
            "candidates": {k: v[1] for k, v in fitted.items()}, "training": ts.summary()}


def _log_datasets(ts: TrainingSet, ds: str) -> None:
    """The training and holdout examples as the run's dataset inputs (MLflow keeps their schema, size and digest)."""
    import mlflow

    cols = [c for c in (*FEATURES, "label") if c in ts.train.columns]
    for context, df, first, last in (("training", ts.train, ts.first_day, ts.split_day),
                                     ("holdout", ts.holdout, ts.split_day, ts.last_day)):
        data = mlflow.data.from_pandas(df[cols], targets="label", name=f"pushed_materials_{first}_{last}")
        mlflow.log_input(data, context=context)


def _describe_version(version: str, best: str, ts: TrainingSet, metrics: dict, oracle, fitted: dict) -> None:
    import mlflow

    from training.registry import MODEL_NAME, MODEL_NOTE

    client = mlflow.MlflowClient()
    if not (client.get_registered_model(MODEL_NAME).description or ""):
        client.update_registered_model(MODEL_NAME, description=MODEL_NOTE)
    losers = ", ".join(f"{k} AUC {m['auc']:.3f}" for k, (_, m, _) in fitted.items() if k != best)
    text = (f"{best} trained on {len(ts.train):,} pushed materials {ts.first_day}..{ts.split_day} (sample rate "
            f"{ts.sample_rate:.3g}); holdout {ts.split_day}..{ts.last_day}: AUC {metrics['auc']:.3f}, log loss "
            f"{metrics['log_loss']:.4f}" + (f", oracle AUC {oracle:.3f}" if oracle is not None else "")
            + (f". Lost: {losers}." if losers else "."))
    client.update_model_version(MODEL_NAME, version, description=text)


def history_shortfall(ts: TrainingSet, min_train_opens: int, min_holdout_opens: int) -> str | None:
    """Why the push history cannot train a model tonight (None: it can)."""
    opens, hopens = int(ts.train["label"].sum()), int(ts.holdout["label"].sum())
    short = []
    if opens < min_train_opens or opens == len(ts.train):
        short.append(f"{opens} opens in {len(ts.train)} pushed materials {ts.first_day}..{ts.split_day} "
                     f"(training.min_train_opens {min_train_opens})")
    if hopens < min_holdout_opens or hopens == len(ts.holdout):
        short.append(f"{hopens} opens in {len(ts.holdout)} holdout materials from {ts.split_day} "
                     f"(training.min_holdout_opens {min_holdout_opens})")
    return "; ".join(short) or None


def young_history_split(ts: TrainingSet) -> TrainingSet | None:
    """A young push history (a deployment's first week) has too little before the usual holdout days to train on:
    the same examples split at their newest day instead (that day is the holdout). None if there is one day or
    none."""
    from dataclasses import replace
    from datetime import date, timedelta

    both = pd.concat([ts.train, ts.holdout], ignore_index=True)
    if both.empty or both["day"].nunique() < 2:
        return None
    last = int(both["day"].max())
    hold = both["day"] >= last
    return replace(ts, train=both[~hold].reset_index(drop=True), holdout=both[hold].reset_index(drop=True),
                   split_day=(date(1970, 1, 1) + timedelta(days=last)).isoformat())


def register_prior(ts: TrainingSet, ds: str, config_version: str, open_rate: float, reason: str) -> dict:
    """Log and register the prior policy (training/prior.py) as a version of the CTR model, tagged policy=prior,
    with its intercept calibrated on whatever push history there is."""
    import mlflow
    from mlflow.models import infer_signature

    from training.prior import COEFFICIENTS, POLICY_TAG, PRIOR, prior_estimator

    history = pd.concat([ts.train, ts.holdout], ignore_index=True)
    X, y = feature_matrix(history), history["label"].to_numpy()
    est = prior_estimator(open_rate, X, y)
    Xh, yh = feature_matrix(ts.holdout), ts.holdout["label"].to_numpy()
    metrics = evaluate(yh, est.predict_proba(Xh)[:, 1]) if len(np.unique(yh)) == 2 else {}
    elasticity = COEFFICIENTS["hour_share_log"]
    recal = feed_recalibration(est, ts.holdout)
    with mlflow.start_run(run_name=f"prior-{ds}") as run:
        mlflow.set_tags({"ds": ds, "config_version": config_version, "model_kind": "prior", POLICY_TAG: PRIOR,
                         "prior.reason": reason})
        mlflow.log_params({"model_kind": "prior", "features": ",".join(FEATURES), "history_rows": len(history),
                           "history_opens": int(y.sum()), "prior_open_rate": open_rate,
                           "intercept": round(float(est.intercept_[0]), 6),
                           "open_window_hours": ts.open_window_hours, "immature_pushes_left_out": ts.immature_pushes,
                           **{f"coef_{k}": v for k, v in COEFFICIENTS.items()}})
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()} | {TIMING_TAG: elasticity})
        example = pd.DataFrame(np.zeros((1, len(FEATURES))), columns=list(FEATURES))
        info = mlflow.sklearn.log_model(est, name="model", input_example=example,
                                        signature=infer_signature(example, est.predict_proba(example.to_numpy())[:, 1]))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "scene_codes.json").write_text(json.dumps(ts.scene_codes, indent=2, sort_keys=True))
            (Path(tmp) / "training_data_summary.json").write_text(json.dumps(ts.summary(), indent=2, default=str))
            mlflow.log_artifacts(tmp)
        version = mlflow.register_model(info.model_uri, MODEL_NAME, tags={
            "ds": ds, "config_version": config_version, TIMING_TAG: f"{elasticity:.6f}", POLICY_TAG: PRIOR,
            FEATURES_TAG: ",".join(FEATURES), HISTORY_SCENES_TAG: history_scenes_tag(history), **_recal_tags(recal)})
    log.info("prior policy registered as %s version %s: %s", MODEL_NAME, version.version, reason)
    return {"run_id": run.info.run_id, "version": str(version.version), "model_kind": "prior", "policy": PRIOR,
            "reason": reason, "holdout": metrics, "oracle_auc": None, TIMING_TAG: elasticity,
            "recalibration": recal.as_dict(),
            "training": ts.summary()}


def champion_recalibration(holdout: pd.DataFrame):
    """(version, Recalibration) of the current trained @champion refitted on this night's holdout, or None (no
    champion, a prior, or too few pushes to fit). The gate keeps a champion for its ranking; its calibration must
    still follow the newest pushes — Hermes' own, once there are enough (feed_recalibration) — or a champion held
    over a night whose plans changed format stays at the level of the history it was trained on."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from training.prior import POLICY_TAG, PRIOR
    from training.registry import CHAMPION

    try:
        champ = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException:
        return None
    if champ.tags.get(POLICY_TAG) == PRIOR or holdout.empty or not reads_current_features(champ):
        return None
    recal = feed_recalibration(mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{champ.version}"), holdout)
    if recal.identity:
        return None
    return str(champ.version), recal


def gate_version(run_id: str, version: str, holdout: pd.DataFrame, margin: float) -> dict:
    """The promotion gate for a registered version, on the holdout it was evaluated on."""
    import mlflow
    from sklearn.metrics import roc_auc_score

    from training.prior import POLICY_TAG, PRIOR
    from training.registry import gate_prior

    if mlflow.MlflowClient().get_model_version(MODEL_NAME, str(version)).tags.get(POLICY_TAG) == PRIOR:
        decision = gate_prior(str(version))
        log_decision(run_id, decision)
        return decision.as_dict()
    Xh, yh = feature_matrix(holdout), holdout["label"].to_numpy()
    candidate = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version}")
    auc = float(roc_auc_score(yh, candidate.predict_proba(Xh)[:, 1]))
    decision = gate(str(version), auc, Xh, yh, margin)
    log_decision(run_id, decision)
    return decision.as_dict()
