"""Nightly jobs: `train` builds the point-in-time training set, trains, logs to MLflow and registers a
version of `hermes-ctr`, keeping the holdout beside the run's reports; `gate` then promotes that version to
@champion only for a clear improvement on that same holdout, else makes it @challenger.
"""
from __future__ import annotations

import json
import logging

from core.settings import Settings
from core.warehouse import Warehouse
from jobs.entry import as_of_end, spark_job_main

log = logging.getLogger(__name__)


def run(spark, settings: Settings, ds: str, loaded, force_kind: str | None = None) -> dict:
    from jobs.rollups import read_activity
    from lab.simulator.ground_truth import GroundTruth
    from training.dataset import build_training_set, earliest_input_day
    from training.prior import TRAINED
    from training.registry import configure_mlflow
    from training.train import history_shortfall, register_prior, train_and_register, young_history_split

    wh = Warehouse(settings.warehouse)
    cfg = loaded.config.platform.training
    first = earliest_input_day(ds, cfg.train_days)
    tables = {"users": wh.read_raw(spark, "users"), "items": wh.read_raw(spark, "items"),
              "events": read_activity(spark, wh, first, ds), "push_log": wh.read_raw(spark, "push_log", first, ds),
              "item_changes": wh.read_raw(spark, "item_changes", last_ds=ds)}
    def via_warehouse(examples):
        """The examples as a table of their own (training/examples, ds=<ds>), read back with pyarrow."""
        wh.write_partition(examples, EXAMPLES, ds, loaded.version)
        pdf = wh.read_arrow(EXAMPLES, ds, examples.columns).to_pandas()
        pdf["sent_at"] = pdf["sent_at"].dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
        return pdf

    ts = build_training_set(tables, ds, as_of_end(ds), cfg.train_days, cfg.holdout_days,
                            [s.id for s in loaded.config.scenes], materialise=via_warehouse,
                            max_examples=cfg.max_examples)
    log.info("training set for %s: %s", ds, ts.summary())
    # The simulator's ground truth, when there is one, gives the oracle AUC; real data has none.
    truth = GroundTruth.load(wh.ground_truth) if (wh.ground_truth / "latent.npz").exists() else None
    configure_mlflow(settings.mlflow_tracking_uri, settings.home / "mlflow" / "artifacts")
    short = history_shortfall(ts, cfg.min_train_opens, cfg.min_holdout_opens)
    young = young_history_split(ts) if short and cfg.holdout_days > 1 else None
    if young is not None and not history_shortfall(young, cfg.min_train_opens, cfg.min_holdout_opens):
        log.info("train %s: a young push history (%s): the newest day %s is the holdout", ds, short, young.split_day)
        ts, short = young, None
    if short:
        log.warning("train %s: too little push history to train (%s): the prior policy plans", ds, short)
        result = register_prior(ts, ds, loaded.version, cfg.prior_open_rate, short)
    else:
        keys = ("train_days", "holdout_days", "promotion_margin", "max_examples", "min_train_opens", "min_holdout_opens")
        result = train_and_register(ts, ds, loaded.version, truth, force_kind=force_kind,
                                    training_config={k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}) | {"policy": TRAINED}
    out = wh.report("training", ds, "train")
    out.parent.mkdir(parents=True, exist_ok=True)
    ts.holdout.to_parquet(holdout_path(wh, ds), index=False)
    out.write_text(json.dumps(result, indent=2, default=str))
    return result | {"ds": ds, "config_version": loaded.version, "tables": {}}


EXAMPLES = "training/examples"


def holdout_path(wh: Warehouse, ds: str):
    return wh.report("training", ds, "holdout").with_suffix(".parquet")


def gate(settings: Settings, ds: str, loaded) -> dict:
    """Decide on the version the run for `ds` trained (read from its training report)."""
    import pandas as pd

    from training.registry import configure_mlflow
    from training.train import champion_recalibration, gate_version

    wh = Warehouse(settings.warehouse)
    trained = json.loads(wh.report("training", ds, "train").read_text())
    configure_mlflow(settings.mlflow_tracking_uri, settings.home / "mlflow" / "artifacts")
    holdout = pd.read_parquet(holdout_path(wh, ds))
    decision = gate_version(trained["run_id"], trained["version"], holdout, loaded.config.platform.training.promotion_margin)
    if decision.get("decision") == "held":
        # the champion plans on: its calibration is refitted on this night's holdout (jobs/windows reads it from here)
        refit = champion_recalibration(holdout)
        if refit is not None:
            decision["champion_recalibration"] = {"version": refit[0], "ds": ds, **refit[1].as_dict()}
            log.info("gate %s: champion %s recalibrated on this night's holdout: %s", ds, refit[0], refit[1].reason)
    wh.report("training", ds, "gate").write_text(json.dumps(decision, indent=2))
    return decision


def main(argv=None) -> None:
    spark_job_main(run, "train", __doc__, argv)


if __name__ == "__main__":
    main()
