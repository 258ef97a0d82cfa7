"""Closed-loop evaluation: Push 1.0 (the baseline policy) and Hermes side by side on the same simulated world.

    hermes evaluate --days 5 --seed 7 [--users 4000]        (infra/evaluate.sh / `make evaluate` start the servers)

1. One world is simulated: `history_days` of Push 1.0 (its logged push_log with propensities is the history
   both policies start from), then `days` with organic events only. Organic behaviour never depends on pushes,
   so both arms face the same users and the same events.
2. Each arm gets its own warehouse (hard links of the shared raw data), MLflow registry, delivery ledger and
   bucket, and lives the evaluation days in a closed loop, one night at a time:
   nightly stages (features, audiences, fatigue, train + gate, score, select) -> send windows -> push batches in
   S3 -> delivery of all 24 hours through the real gateway process -> opens and clicks drawn from the
   simulator's ground truth for what the gateway acknowledged -> the arm's push_log and events -> next night.
   The two arms run the same code; only `policy` (whose plan becomes the batches) differs. Capacity, fatigue
   and the holdout are the same. Outcome draws use common random numbers per (user, day): a user who would
   open a push of probability p opens it in both arms if p is high enough, so arm differences are the
   policies', not the dice's.
3. Metrics per arm and as ratios with paired bootstrap confidence intervals (users resampled), the holdout
   comparison for incremental activation, an off-policy (IPS / SNIPS) estimate of Hermes' open rate from the
   baseline arm's log, and plots; everything is logged to MLflow (experiment `hermes-evaluation`) as one run
   and written to <out>/report.json and report.md.

Trigger rules are not part of the first two arms: Push 1.0 had none, and they compare the nightly policies. With
`--realtime` a third arm, Hermes + real-time (lab/evaluation/realtime.py), sends Hermes' plan and runs the streaming
trigger engine over each day's events, on the same world and common random numbers.
"""
from __future__ import annotations

import importlib
import json
import logging
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from core.settings import Settings
from lab.evaluation.arms import REALTIME, Arm, EvalSpec, policy_of, prepare
from lab.evaluation.outcomes import draw_outcomes
from lab.evaluation.report import report

log = logging.getLogger(__name__)


def live_day(spark, arm: Arm, send_day: str, spec: EvalSpec, baseline: Arm | None = None) -> dict:
    """Plan send_day from the night before, deliver it through the gateway, draw its outcomes. baseline: the Push 1.0
    arm, when it has planned the night already: the Hermes arm's plan is judged against the plan that arm sends."""
    from jobs import batches, deliver, windows
    from jobs.tasks import STAGES
    from jobs.train import gate

    ds = (date.fromisoformat(send_day) - timedelta(days=1)).isoformat()
    s, loaded = arm.settings, arm.loaded
    times = {}
    t0 = time.monotonic()
    for stage in STAGES:
        t = time.monotonic()
        importlib.import_module(f"jobs.{stage}").run(spark, s, ds, loaded)
        if stage == "train":
            gate(s, ds, loaded)
        times[stage] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    planned_windows = windows.run(s, ds, loaded)
    judged = None
    if arm.name == "hermes":        # the plan under the world's truth, before anything is sent
        from lab.evaluation.judge import judge, lines

        q = loaded.config.platform.quiet_hours
        judged = judge(arm.wh, ds, (q.start_hour, q.end_hour), baseline_wh=baseline.wh if baseline else None,
                       max_per_category=loaded.config.platform.feed.max_per_category,
                       first_slot=loaded.config.platform.windows.first_send_hour_utc)
        judged["model_policy"] = json.loads(Path(planned_windows["report"]).read_text()).get("model_policy")
        log.info("\n".join(lines(judged)))
    planned = batches.run(s, ds, loaded, policy=policy_of(arm.name))
    times["windows+batches"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    states: dict[str, int] = {}
    withdrawn = refilled = 0
    from delivery.batches import PLAN_HOURS

    slot0 = datetime.fromisoformat(send_day).replace(tzinfo=timezone.utc).timestamp()
    for hour in range(PLAN_HOURS):       # 24-35: the next UTC day's first hours, for users west of UTC
        # each hour's run knows the item changes up to its start, as an hourly run on time would
        r = deliver.run(s, send_day, hour, loaded, ramp=False, now=slot0 + 3600 * hour)
        for k, v in r.get("states", {}).items():
            states[k] = states.get(k, 0) + v
        withdrawn += r.get("withdrawn_items_gone", 0)
        refilled += r.get("reserve_items_sent", 0)
    times["deliver"] = round(time.monotonic() - t, 1)
    realtime = None
    if arm.name == REALTIME:         # the day's events through the streaming engine, before the outcomes are drawn
        from lab.evaluation.realtime import stream_day

        t = time.monotonic()
        realtime = stream_day(arm, send_day)
        for k, v in realtime["delivered"].items():
            states[k] = states.get(k, 0) + v
        times["stream"] = round(time.monotonic() - t, 1)
    t = time.monotonic()
    outcome = draw_outcomes(arm, send_day, spec)
    times["outcomes"] = round(time.monotonic() - t, 1)
    if outcome["sent"] != states.get("acked", 0):
        raise AssertionError(f"{arm.name} {send_day}: {states.get('acked', 0)} acknowledged but {outcome['sent']} "
                             "receipts in push_log")
    log.info("%s %s: planned %s, delivered %s, opens %d / %d in %.0f s %s", arm.name, send_day,
             planned.get("messages"), states, outcome["opened"], outcome["sent"], time.monotonic() - t0, times)
    return {"send_day": send_day, "states": states, "planned": planned.get("messages"),
            "withdrawn_items_gone": withdrawn, "reserve_items_sent": refilled, **outcome, "seconds": times,
            **({"judge": judged} if judged else {}), **({"realtime": realtime} if realtime else {})}



def run(base: Settings, spec: EvalSpec, out: Path | None = None, spark=None) -> dict:
    """The whole evaluation; needs the object store and the gateway reachable (infra/evaluate.sh starts them).
    `spark`: a session to use (else one is started and stopped here)."""
    from contextlib import nullcontext

    from delivery.objectstore import ensure_bucket
    from jobs.entry import spark_session

    t0 = time.monotonic()
    out = Path(out or base.home / "evaluation" / f"seed={spec.seed}")
    arms, send_days = prepare(base, spec, out)
    for arm in arms.values():
        ensure_bucket(arm.settings)
    days = {name: [] for name in arms}
    with (nullcontext(spark) if spark is not None else spark_session(base, f"hermes-evaluate-{spec.seed}")) as spark:
        for d in send_days:
            for name, arm in arms.items():      # the Push 1.0 arm first: the Hermes arm's judge reads its plan
                days[name].append(live_day(spark, arm, d, spec, arms["baseline"] if name == "hermes" else None))
    return report(base, spec, out, days, time.monotonic() - t0)
