"""MLflow side of training: experiment `hermes-ctr`, registered model `hermes-ctr`, and the promotion gate.

A new version becomes @champion only if it beats the current champion's AUC on the *same* holdout by the
configured margin; otherwise it is @challenger. The decision and its numbers are logged on the run.
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

EXPERIMENT = "hermes-ctr"
MODEL_NAME = "hermes-ctr"
CHAMPION, CHALLENGER = "champion", "challenger"
# Types skops must be told to trust to save/load a HistGradientBoosting model (all scikit-learn internals).
SKOPS_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
                 "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
                 "sklearn.utils.validation.check_array", "functools.partial"]

log = logging.getLogger(__name__)

# Each version is tagged with the pair features it reads, in order (the estimator takes a bare matrix: a version fed
# another feature set would read one feature as another without an error). Versions registered before the tag
# (2026-12-05) read LEGACY_FEATURES, the set of that day.
FEATURES_TAG = "features"
LEGACY_FEATURES = ("u_opens_7d,u_opens_28d,u_views_7d,u_favs_28d,u_pushes_1d,u_pushes_7d,u_push_open_rate,aff_share,"
                   "hour_share_log,i_drop_pct,i_age_log,i_views_7d_log,i_favs_7d_log,i_fav_rate,i_price_rel,scene_code")


def current_features() -> str:
    from features.pairs import FEATURES

    return ",".join(FEATURES)


def version_features(model_version) -> str:
    """The feature set a registered version (an MLflow ModelVersion) reads."""
    return model_version.tags.get(FEATURES_TAG, LEGACY_FEATURES)


def reads_current_features(model_version) -> bool:
    return version_features(model_version) == current_features()


def configure_mlflow(tracking_uri: str, artifact_root: Path, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the tracking/registry store, make sure the experiment exists with its artifacts under
    `artifact_root` (never the process's working directory) and make it the active one. Returns its id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        artifact_root.mkdir(parents=True, exist_ok=True)
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_root.resolve().as_uri())
    else:
        experiment_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    _describe(experiment_id, exp.tags if exp is not None else {})
    return experiment_id


EXPERIMENT_NOTE = """**Hermes CTR model**: one run per nightly (`ctr-<ds>`), trained on the push history's pushed materials
(user x scene x item) with their opens as labels; it scores every candidate pair of the next night's plan.

- *Params*: the training window and holdout (`training.*` of conf/platform.yaml), the winner's and the losing
  candidate's hyperparameters (`winner.*`, `candidate.<kind>.*`), the data's size.
- *Metrics*: holdout AUC / log loss / calibration of the winner and each candidate; on simulated worlds the oracle
  AUC (the truth's) and the attainable one; the gate's decision (`gate_*`).
- *Datasets*: the training and holdout examples (their schema and digest).
- *Artifacts*: ROC (AUC in the legend), calibration, feature importance, the data summary, the gate's decision.
- *Registry*: model `hermes_ctr`; `@champion` plans, `@challenger` waits; each version's description and tags carry
  its AUC and the gate's decision.
"""
MODEL_NOTE = ("The CTR model the Hermes nightly plans with: p(open) of a push of one scene and item feed to one user at "
              "one hour. `@champion` is the version the nightly plans and the streaming engine decides with; a new "
              "version is promoted only if it beats the champion's holdout AUC by `training.promotion_margin` on the "
              "same holdout. Each version's description says what it was trained on and how the gate decided.")


def _describe(experiment_id: str, tags: dict) -> None:
    """The experiment's kind (a model-training experiment: the UI opens on its runs, not on GenAI traces) and its
    description; a description someone edited in the UI is kept."""
    import mlflow

    client = mlflow.MlflowClient()
    if tags.get("mlflow.experimentKind") != "custom_model_development":
        client.set_experiment_tag(experiment_id, "mlflow.experimentKind", "custom_model_development")
    if not tags.get("mlflow.note.content"):
        client.set_experiment_tag(experiment_id, "mlflow.note.content", EXPERIMENT_NOTE)


@dataclass
class GateDecision:
    candidate_version: str
    decision: str                     # "promoted" | "held"
    alias: str
    candidate_auc: float | None       # None: a prior version, which has no AUC of its own to gate on
    champion_version: str | None
    champion_auc: float | None
    margin: float
    reason: str

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def gate(candidate_version: str, candidate_auc: float, X_holdout: np.ndarray, y_holdout: np.ndarray,
         margin: float) -> GateDecision:
    """Promote `candidate_version` to @champion if it beats the champion on this holdout by `margin`."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from sklearn.metrics import roc_auc_score

    client = mlflow.MlflowClient()
    try:
        champ = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException:
        champ = None
    if champ is None:
        decision = GateDecision(candidate_version, "promoted", CHAMPION, candidate_auc, None, None, margin,
                                "no champion yet")
    elif not reads_current_features(champ):
        decision = GateDecision(candidate_version, "promoted", CHAMPION, candidate_auc, str(champ.version), None,
                                margin, f"champion {champ.version} reads another feature set "
                                f"({version_features(champ)}) than this version ({current_features()}): it cannot "
                                "be scored on this holdout")
    else:
        model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{champ.version}")
        champ_auc = float(roc_auc_score(y_holdout, model.predict_proba(X_holdout)[:, 1]))
        if candidate_auc >= champ_auc + margin:
            decision = GateDecision(candidate_version, "promoted", CHAMPION, candidate_auc, str(champ.version), champ_auc,
                                    margin, f"AUC {candidate_auc:.4f} >= champion {champ_auc:.4f} + {margin}")
        else:
            decision = GateDecision(candidate_version, "held", CHALLENGER, candidate_auc, str(champ.version), champ_auc,
                                    margin, f"AUC {candidate_auc:.4f} < champion {champ_auc:.4f} + {margin}")
    client.set_registered_model_alias(MODEL_NAME, decision.alias, candidate_version)
    log.info("gate: version %s %s (%s)", candidate_version, decision.decision, decision.reason)
    return decision


def champion_policy() -> tuple[str | None, str | None]:
    """(version, policy) of the current @champion: policy "prior" or "trained" (None, None: no champion)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from training.prior import POLICY_TAG, TRAINED

    try:
        champ = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException:
        return None, None
    return str(champ.version), champ.tags.get(POLICY_TAG, TRAINED)


def version_policy(version: str) -> str:
    """"prior" or "trained": which policy a registered version of the CTR model is (untagged: trained)."""
    from training.prior import POLICY_TAG, TRAINED

    return version_tags(version).get(POLICY_TAG, TRAINED)


def gate_prior(version: str) -> GateDecision:
    """A prior version (too little push history to train) plans only while no trained model does: it becomes
    @champion when there is none or the champion is an earlier prior (the new one is calibrated on more history),
    and stays @challenger beside a trained champion."""
    import mlflow

    from training.prior import PRIOR

    champ, policy = champion_policy()
    if champ is None:
        decision = GateDecision(version, "promoted", CHAMPION, None, None, None, 0.0,
                                "no champion yet: the prior policy plans until a trained model beats it on a holdout")
    elif policy == PRIOR:
        decision = GateDecision(version, "promoted", CHAMPION, None, champ, None, 0.0,
                                f"replaces prior version {champ}: still too little push history to train; this prior "
                                "is calibrated on the history there is")
    elif not _champion_reads_current_features():
        decision = GateDecision(version, "promoted", CHAMPION, None, champ, None, 0.0,
                                f"replaces trained version {champ}, which reads another feature set than this code "
                                "computes: too little push history to train one that reads it")
    else:
        decision = GateDecision(version, "held", CHALLENGER, None, champ, None, 0.0,
                                f"trained champion {champ} keeps planning: tonight's history is too thin to train")
    mlflow.MlflowClient().set_registered_model_alias(MODEL_NAME, decision.alias, version)
    log.info("gate: prior version %s %s (%s)", version, decision.decision, decision.reason)
    return decision


def _champion_reads_current_features() -> bool:
    import mlflow

    champ = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION)
    return reads_current_features(champ)


def log_decision(run_id: str, decision: GateDecision) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    client.set_tag(run_id, "gate.decision", decision.decision)
    client.set_tag(run_id, "gate.reason", decision.reason)
    # on the version too: the registry's page says how each version fared without opening its run
    v = decision.candidate_version
    client.set_model_version_tag(MODEL_NAME, v, "gate.decision", decision.decision)
    client.set_model_version_tag(MODEL_NAME, v, "gate.alias", decision.alias)
    if decision.candidate_auc is not None:
        client.set_model_version_tag(MODEL_NAME, v, "holdout_auc", f"{decision.candidate_auc:.4f}")
    before = client.get_model_version(MODEL_NAME, v).description or ""
    client.update_model_version(MODEL_NAME, v, description=(before.split("\n\nGate:")[0] + f"\n\nGate: "
                                                           f"{decision.decision} as @{decision.alias}: {decision.reason}"))
    if decision.candidate_auc is not None:
        client.log_metric(run_id, "gate_candidate_auc", decision.candidate_auc)
    if decision.champion_auc is not None:
        client.log_metric(run_id, "gate_champion_auc", decision.champion_auc)
    client.log_metric(run_id, "gate_margin", decision.margin)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gate_decision.json"
        path.write_text(json.dumps(decision.as_dict(), indent=2))
        client.log_artifact(run_id, str(path))


def champion_uri() -> str:
    return f"models:/{MODEL_NAME}@{CHAMPION}"


def resolve_champion() -> tuple[str, str]:
    """(version, run_id) of the current @champion; a clear error when there is none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        v = mlflow.MlflowClient().get_model_version_by_alias(MODEL_NAME, CHAMPION)
    except MlflowException:
        raise LookupError(f"registered model {MODEL_NAME!r} has no @{CHAMPION}: run the training task first") from None
    if not reads_current_features(v):
        raise LookupError(f"registered model {MODEL_NAME!r} @{CHAMPION} (version {v.version}) reads the pair features "
                          f"{version_features(v)}; this Hermes computes {current_features()}: run the training task "
                          "(train and gate) so a version of this feature set plans")
    return v.version, v.run_id


def version_tags(version: str) -> dict[str, str]:
    """Every tag of a registered version of the CTR model."""
    import mlflow

    return mlflow.MlflowClient().get_model_version(MODEL_NAME, str(version)).tags


def version_tag(version: str, tag: str) -> str:
    """A tag of a registered version of the CTR model; a clear error naming both when it is missing."""
    tags = version_tags(version)
    if tag not in tags:
        raise LookupError(f"registered model {MODEL_NAME!r} version {version} has no tag {tag!r}: it was trained "
                          "before Hermes recorded it; re-run the train and gate tasks")
    return tags[tag]
