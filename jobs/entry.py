"""The command line every Spark job shares: `python -m jobs.<job> --ds YYYY-MM-DD [--config SNAPSHOT]`.

Reads settings once, builds the one session, runs the job's `run(spark, settings, ds, config)`.
"""
from __future__ import annotations

import argparse
import json
import logging
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

from core.settings import Settings


def as_of_end(ds: str) -> datetime:
    """A run for ds sees everything strictly before the next UTC midnight."""
    return datetime.combine(date.fromisoformat(ds) + timedelta(days=1), time.min, tzinfo=timezone.utc)


def plan_date(ds: str) -> date:
    """The nightly run for ds plans pushes for the local day after it."""
    return date.fromisoformat(ds) + timedelta(days=1)


class Phases:
    """Where a stage's time goes: each call `phases(name)` logs the seconds since the previous call (or since the
    start) as `<stage> ds=<ds>: <name> took N s`, and keeps them in `seconds` for the task's result. A phase should
    end with a write or a collect, so that its work is done inside it."""

    def __init__(self, stage: str, ds: str, log: logging.Logger):
        import time as _time

        self._clock, self.stage, self.ds, self.log = _time.monotonic, stage, ds, log
        self.seconds: dict[str, float] = {}
        self._started = self._clock()

    def __call__(self, name: str) -> None:
        now = self._clock()
        self.seconds[name] = round(now - self._started, 1)
        self._started = now
        self.log.info("%s ds=%s: %s took %.1f s", self.stage, self.ds, name, self.seconds[name])


@contextmanager
def spark_session(settings: Settings, app: str):
    from core.spark import build_spark

    spark = build_spark(settings, app)
    try:
        yield spark
    finally:
        spark.stop()


def load_run_config(settings: Settings, snapshot: str | Path | None):
    """The run's config: its snapshot if given (what a DAG run uses), else conf/ validated now."""
    from core.config.loader import load_config, read_snapshot

    return read_snapshot(Path(snapshot)) if snapshot else load_config(settings.conf_dir)


def spark_job_main(run, app: str, doc: str | None, argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog=f"python -m jobs.{app}", description=doc)
    p.add_argument("--ds", required=True, type=lambda s: date.fromisoformat(s).isoformat())
    p.add_argument("--config", help="config snapshot JSON (default: validate conf/ now)")
    p.add_argument("--result", type=Path, help="also write the result JSON here (what a submitting task reads)")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    loaded = load_run_config(settings, args.config)
    with spark_session(settings, f"hermes-{app}-{args.ds}") as spark:
        result = json.dumps(run(spark, settings, args.ds, loaded), indent=2, default=str)
    print(result)
    if args.result:
        tmp = args.result.with_suffix(".tmp")
        tmp.write_text(result)
        tmp.replace(args.result)
