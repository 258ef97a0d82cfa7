"""The `hermes` command: one entry point for the jobs a person runs by hand.

Each subcommand is a thin call of a job module; settings are read from the environment once, here.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from core.settings import Settings, settings_table


def _cmd_simulate(args, settings):
    from lab import simulate

    simulate.run(args, settings)


def _cmd_validate_raw(args, settings):
    from core.config.loader import load_config
    from core.contract import RAW_TABLES
    from core.warehouse import Warehouse
    from expectations.gate import DataQualityError
    from jobs.validate_raw import validate_raw_table

    rules = load_config(settings.conf_dir).config.platform.validation
    failed = 0
    for table in args.table or RAW_TABLES:
        try:
            r = validate_raw_table(Warehouse(settings.warehouse), table, args.ds, rules)
            print(f"ok    raw/{table}: {r.rows_in:,} rows in, {r.rows:,} kept, {r.quarantined:,} quarantined, "
                  f"{r.checked} rules")
            for rule, n in r.by_rule.items():
                print(f"        quarantined {n:,}: {rule} (e.g. {', '.join(r.examples.get(rule, []))})")
            for w in r.warnings:
                print(f"WARN  {w}")
        except DataQualityError as e:
            failed += 1
            print(f"FAIL  {e}")
    if failed:
        sys.exit(1)


def _cmd_stage(args, settings):
    import importlib
    import json

    from jobs.entry import load_run_config, spark_session
    from jobs.tasks import STAGES

    loaded = load_run_config(settings, args.config)
    stages = list(STAGES) if args.stage == "all" else [args.stage]
    with spark_session(settings, f"hermes-{args.stage}") as spark:
        for stage in stages:
            result = importlib.import_module(f"jobs.{stage}").run(spark, settings, args.ds, loaded)
            print(json.dumps(result, indent=2, default=str))
            if stage == "train":
                from jobs.train import gate

                print(json.dumps({"gate": gate(settings, args.ds, loaded)}, indent=2, default=str))


def _cmd_plan(args, settings):
    import json

    from jobs import batches, plan_report, windows
    from jobs.entry import load_run_config

    loaded = load_run_config(settings, args.config)
    w = windows.run(settings, args.ds, loaded)
    print(json.dumps(w, indent=2, default=str))
    r = plan_report.run(settings, args.ds, loaded, log_to_mlflow=not args.no_mlflow)
    print(json.dumps(r, indent=2, default=str))
    if args.dry_run:
        print(f"dry run: nothing written to the object store; report: {r['html']}")
        return
    print(json.dumps(batches.run(settings, args.ds, loaded, policy=args.policy), indent=2, default=str))


def _day(text: str) -> str:
    """--ds / --day: an ISO date (a usage error naming the option, not a traceback)."""
    from datetime import date

    try:
        return date.fromisoformat(text).isoformat()
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD ({e})") from None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, when it has one."""

    def _get_help_string(self, action):
        h = action.help or ""
        if "%(default)" not in h and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            h += " (default: %(default)s)"
        return h


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has left (poll reports an error on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _what_to_fix(e: BaseException, settings: Settings | None) -> str | None:
    """The one-line cause and fix of an error a person can fix (None: an unexpected error, shown with its
    traceback). Never prints a secret: URLs are shown without their password."""
    name = f"{type(e).__module__}.{type(e).__name__}"
    s = settings

    def safe(url: str) -> str:
        try:
            from sqlalchemy.engine import make_url

            return make_url(url).render_as_string(hide_password=True)
        except Exception:                       # not even a URL: show its scheme only
            return url.split(":", 1)[0] + ":..."

    if name.startswith("botocore.exceptions.") or name.startswith("boto3.exceptions."):
        where = s.s3_endpoint if s else "$HERMES_S3_ENDPOINT"
        return (f"the object store at {where} failed: {e}. Is it running (bash infra/s3.sh start) and are its keys "
                "the ones in $HERMES_HOME/secrets.env?")
    if name.startswith("sqlalchemy.exc.") and type(e).__name__ in ("ArgumentError", "NoSuchModuleError"):
        return (f"HERMES_LEDGER_URL={safe(s.ledger_url) if s else '?'} is not a database URL Hermes can open ({e}); "
                "use sqlite:////absolute/path.sqlite or postgresql+psycopg://user@127.0.0.1:5432/db")
    if name.startswith("sqlalchemy.exc.") and type(e).__name__ in ("OperationalError", "InterfaceError"):
        return (f"the state database {safe(s.ledger_url) if s else '$HERMES_LEDGER_URL'} cannot be used: "
                f"{str(e).splitlines()[0]}. Is it running and reachable (bash infra/postgres.sh start for the "
                "production profile)?")
    if isinstance(e, ConnectionError) or name.startswith(("httpx.", "aiohttp.client_exceptions.")):
        return f"a server Hermes needs did not answer: {e}. Start it (make ui, or the infra/<server>.sh start scripts)"
    if isinstance(e, (FileNotFoundError, PermissionError)):
        return str(e)
    if type(e).__name__ in ("ConfigError", "StateLocked", "DeliveryBusy"):
        return str(e)
    return None


def _plan_hour(text: str):
    """--hour: 'all' or a plan hour 0-35 (argparse turns the ValueError into a usage error, not a traceback)."""
    from delivery.batches import PLAN_HOURS

    if text == "all":
        return text
    if not text.isdigit() or int(text) >= PLAN_HOURS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a plan hour: 0-23 on the send day, 24-{PLAN_HOURS - 1} "
                                         "for 0-11 of the next UTC day, or 'all'")
    return int(text)


def _cmd_deliver(args, settings):
    import json

    from delivery.batches import PLAN_HOURS
    from delivery.ledger import DeliveryBusy
    from jobs import deliver
    from jobs.entry import load_run_config
    from jobs.tasks import deliver_hour

    hours = range(PLAN_HOURS) if args.hour == "all" else [args.hour]
    incomplete = []
    for hour in hours:
        try:
            if args.config:   # else: the configuration the plan of that day froze, as hermes_hourly does
                out = deliver.run(settings, args.day, hour, load_run_config(settings, args.config),
                                  ramp=not args.no_ramp)
            else:
                out = deliver_hour(args.day, hour, ramp=not args.no_ramp)
        except (deliver.DeliveryIncomplete, DeliveryBusy) as e:  # the other hours still go out; fail at the end
            incomplete.append(str(e))
            print(f"{'BUSY' if isinstance(e, DeliveryBusy) else 'INCOMPLETE'} {e}", file=sys.stderr)
            continue
        print(json.dumps(out, indent=2, default=str))
    if incomplete:
        sys.exit(f"{len(incomplete)} hour(s) not delivered in full by this run (pending, or another run holds "
                 f"them); see above")


def _cmd_triggers(args, settings):
    import json
    from datetime import datetime, timezone

    from jobs import triggers
    from jobs.entry import load_run_config

    loaded = load_run_config(settings, args.config)
    tr = loaded.config.platform.trigger_run
    end = datetime.fromisoformat(args.window_end)
    end = end.replace(tzinfo=timezone.utc) if end.tzinfo is None else end
    print(json.dumps(triggers.run(settings, end, loaded, tr.window_minutes, tr.lateness_minutes,
                                  deliver=not args.no_deliver), indent=2, default=str))


def _cmd_ui(args, settings):
    from configcenter.app import main

    main()


def _cmd_ui_operator(args, settings):
    from configcenter import operators

    if args.action == "list":
        for name in operators.names(settings.home):
            print(name)
        return
    if not args.name:
        raise SystemExit(f"hermes ui-operator {args.action}: name the operator")
    if args.action == "add":
        try:
            token = operators.add(settings.home, args.name)
        except ValueError as e:
            raise SystemExit(f"hermes ui-operator add: {e}") from None
        # the only time the token is shown: hand it to the operator, it is not kept
        print(f"operator {args.name}: token {token}")
        print("(shown once; only its SHA-256 is kept. `hermes ui-operator add` again replaces it)", file=sys.stderr)
    else:
        try:
            operators.remove(settings.home, args.name)
        except KeyError as e:
            raise SystemExit(f"hermes ui-operator remove: {e.args[0]}") from None
        print(f"operator {args.name} removed: their token and sessions no longer work")


def _cmd_config_validate(args, settings):
    from core.config.loader import ConfigError, load_config

    conf = args.conf or settings.conf_dir
    try:
        loaded = load_config(conf)
    except ConfigError as e:
        print(f"INVALID configuration in {conf}:")
        for p in e.problems:
            print(f"  {p}")
        sys.exit(1)
    c = loaded.config
    print(f"ok: {conf} is valid, version {loaded.version}")
    print(f"  {len(c.scenes)} scenes ({len(c.enabled_scenes)} enabled), quiet hours "
          f"{c.platform.quiet_hours.start_hour}:00-{c.platform.quiet_hours.end_hour}:00 local, "
          f"max {c.platform.fatigue.max_per_user_per_day}/user/day")
    for s in c.scenes:
        print(f"  - {s.id:<22}{s.trigger:<19}prio {s.priority:<4}feed {s.feed_size}  "
              f"{'enabled ' if s.enabled else 'DISABLED'}  audience: {s.audience}")
    print(f"  {len(c.triggers)} trigger rules:")
    for t in c.triggers:
        print(f"  - {t.id:<24}when {t.when.event:<14}then {t.then.scene:<20}delay {t.delay_minutes}m  "
              f"unless {list(t.unless)}  regap {t.regap_hours}h  {'enabled' if t.enabled else 'DISABLED'}"
              + (f"  if: {t.condition}" if t.condition else ""))


def _cmd_preflight(args, settings):
    from jobs.preflight import PreflightError, run

    try:
        r = run(settings, args.ds)
    except PreflightError as e:
        raise SystemExit(f"preflight ds={args.ds}: FAILED - {e}") from None
    print(f"preflight ds={args.ds}: ok - {r['messages']:,} messages for {r['send_day']} in {len(r['hours'])} hours, "
          f"reconciled with plan/windows ({r['planned']}); "
          + ("a past day: deliver it with `hermes deliver --hour all`" if r["past_day"]
             else f"{len(r['late_hours'])} hours already over"))


def _cmd_summary(args, settings):
    from jobs.summary import summary

    print("\n".join(summary(settings, args.ds)))


def _cmd_evaluate(args, settings):
    from lab import evaluation as evaluate

    spec = evaluate.EvalSpec(users=args.users, days=args.days, seed=args.seed, history_days=args.history_days,
                             holdout_share=args.holdout_share, variant=args.variant, cold_start=args.cold_start,
                             realtime=args.realtime)
    if args.report_only:
        from pathlib import Path

        evaluate.report(settings, spec, Path(args.out or settings.home / "evaluation" / f"seed={spec.seed}"))
    else:
        evaluate.run(settings, spec, args.out)


def _cmd_import(args, settings):
    from jobs.importer import ImportError_, lines, run

    try:
        report = run(args, settings)
    except ImportError_ as e:
        raise SystemExit(f"import refused: {e}") from None
    print("\n".join(lines(report)))
    if not report["success"]:
        raise SystemExit("import: a table failed validation (above); its rows stay where they were written, "
                         "nothing was quarantined for it")


def _cmd_judge(args, settings):
    import json

    from core.config.loader import load_config
    from lab.evaluation.judge import lines, run

    r = run(settings, args.ds, load_config(settings.conf_dir), args.baseline_warehouse)
    print(json.dumps(r, indent=2, default=float) if args.json else "\n".join(lines(r) + ["", f"report: {r['report']}"]))


def _cmd_stream(args, settings):
    from core.config.loader import load_config
    from jobs import stream

    replay = None
    if args.replay_from:
        import time
        from datetime import datetime

        world = datetime.fromisoformat(args.replay_from.replace("Z", "+00:00")).timestamp()
        replay = (world, time.time() if args.replay_wall_start is None else args.replay_wall_start, args.speed)
    stream.main(settings, load_config(settings.conf_dir), replay)


def _cmd_events_api(args, settings):
    from jobs.events_api import main as serve

    serve(settings, args.port)


def _cmd_stream_status(args, settings):
    import json

    from delivery.stream import EventStream
    from jobs.stream import health

    h = health(settings, args.max_silence)
    s = EventStream(settings.ledger_url)
    try:
        h["stream"] = s.counts()
    finally:
        s.dispose()
    print(json.dumps(h, indent=2, default=str))
    if not h["healthy"]:
        raise SystemExit(f"the streaming engine is not healthy: {h.get('why')}")


def _cmd_settings(args, settings):
    for key, value in settings.describe().items():
        print(f"{key:<26}{value}")
    if args.table:
        print()
        for var, default, meaning in settings_table():
            print(f"| `{var}` | `{default}` | {meaning} |")


def main(argv: list[str] | None = None) -> None:
    from core.quiet import quiet_third_party

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    quiet_third_party()
    parser = argparse.ArgumentParser(prog="hermes", description="Hermes batch push platform")
    sub = parser.add_subparsers(dest="command", required=True)

    from lab.simulate import add_arguments

    p = sub.add_parser("simulate", help="write a simulated marketplace in the raw contract")
    add_arguments(p)
    p.set_defaults(func=_cmd_simulate)

    p = sub.add_parser("validate-raw", help="validate raw tables for a date (schema + GX suites)")
    p.add_argument("--ds", required=True, type=_day, help="the raw partition date (ds=YYYY-MM-DD) to validate")
    p.add_argument("--table", action="append", help="only this raw table (repeatable; default: all of them)")
    p.set_defaults(func=_cmd_validate_raw)

    p = sub.add_parser("stage", help="run one nightly Spark stage (or all) for a date, outside Airflow")
    p.add_argument("stage", choices=["rollups", "user_features", "material_features", "audiences", "fatigue", "train", "score",
                                      "select", "all"], help="train also runs the promotion gate")
    p.add_argument("--ds", required=True, type=_day, help="the nightly run date (YYYY-MM-DD)")
    p.add_argument("--config", help="config snapshot JSON (default: validate conf/ now)")
    p.set_defaults(func=_cmd_stage)

    p = sub.add_parser("plan", help="send windows for a date's selected plan, the plan report, and (unless "
                                    "--dry-run) the push batches in the object store")
    p.add_argument("--ds", required=True, type=_day, help="the nightly date whose plan/selected to schedule (sends on ds+1)")
    p.add_argument("--dry-run", action="store_true", help="windows and report only; write no batches")
    p.add_argument("--no-mlflow", action="store_true", help="do not log the report to MLflow")
    p.add_argument("--policy", choices=["hermes", "baseline"], help="whose plan becomes the batches "
                                                                    "(default: windows.policy in conf)")
    p.add_argument("--config", help="config snapshot JSON (default: validate conf/ now)")
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("deliver", help="deliver a send hour's batch to the push gateway (resumable; receipts to "
                                       "push_log)")
    p.add_argument("--day", required=True, type=_day, help="the UTC send day (batches/ds=<day>)")
    p.add_argument("--hour", required=True, type=_plan_hour,
                   help="the plan's hour: 0-23 on the send day, 24-35 = 0-11 of the next UTC day (users west of "
                        "UTC); or 'all' (0-35)")
    p.add_argument("--no-ramp", action="store_true", help="release the batch at once (catch-up, tests)")
    p.add_argument("--config", help="config snapshot JSON (default: the snapshot of the plan that wrote the day)")
    p.set_defaults(func=_cmd_deliver)

    p = sub.add_parser("triggers", help="run the trigger rules for one event window and deliver what is due")
    p.add_argument("--window-end", required=True, help="UTC end of the window, e.g. 2026-10-30T12:15")
    p.add_argument("--no-deliver", action="store_true", help="decide and write the batch, do not send it")
    p.add_argument("--config", help="config snapshot JSON (default: validate conf/ now)")
    p.set_defaults(func=_cmd_triggers)

    p = sub.add_parser("stream", help="the streaming trigger engine: live events to pushes in seconds, decided by the "
                       "model (long-running; infra/stream.sh starts it by PID)")
    p.add_argument("--replay-from", help="benchmarks: run the engine's clock from this past UTC time (ISO 8601) "
                   "instead of now, to replay a stretch of history published to the stream")
    p.add_argument("--speed", type=float, default=1.0, help="with --replay-from: the clock runs this many times faster "
                   "than the wall clock (default 1)")
    p.add_argument("--replay-wall-start", type=float, help="with --replay-from: the wall time (epoch seconds) the "
                   "clock reads --replay-from at (default: now; -N: N seconds after the engine is ready, reported as "
                   "replay_wall_start in its status); a publisher replaying the events uses the same")
    p.set_defaults(func=_cmd_stream)
    p = sub.add_parser("events-api", help="the live event API producers POST events and item changes to (127.0.0.1)")
    p.add_argument("--port", type=_port, default=int(os.environ.get("HERMES_EVENTS_PORT", "8470")),
                   help="TCP port on 127.0.0.1 (default $HERMES_EVENTS_PORT or 8470)")
    p.set_defaults(func=_cmd_events_api)
    p = sub.add_parser("stream-status", help="the streaming engine's health: last report, lag, decisions, latency "
                       "(exit 1 when it has not reported within --max-silence seconds)")
    p.add_argument("--max-silence", type=float, default=30.0, help="seconds without a report that count as down "
                   "(default 30)")
    p.set_defaults(func=_cmd_stream_status)

    p = sub.add_parser("ui", help="the Configuration Center web UI on 127.0.0.1:$HERMES_UI_PORT (default 8090)")
    p.set_defaults(func=_cmd_ui)

    p = sub.add_parser("ui-operator", help="the Configuration Center's operators, each with a token of their own")
    p.add_argument("action", choices=["add", "remove", "list"], help="add (prints a new token once), remove, list")
    p.add_argument("name", nargs="?", help="the operator's name (a-z, 0-9, _ . -), as the audit log shows it")
    p.set_defaults(func=_cmd_ui_operator)

    p = sub.add_parser("config", help="the Configuration Center")
    csub = p.add_subparsers(dest="config_command", required=True, help="what to do with the configuration")
    v = csub.add_parser("validate", help="validate conf/ and print every problem with file, line and key")
    v.add_argument("--conf", help="folder to validate (default: $HERMES_CONF)")
    v.set_defaults(func=_cmd_config_validate)

    p = sub.add_parser("preflight", help="read a night's push batches back from the object store and reconcile them "
                                         "with the plan (what the hermes_preflight DAG runs when they land)")
    p.add_argument("--ds", required=True, type=_day, help="the nightly run date (YYYY-MM-DD) whose batches to check")
    p.set_defaults(func=_cmd_preflight)

    p = sub.add_parser("summary", help="summarise a nightly run's outputs")
    p.add_argument("--ds", required=True, type=_day, help="the nightly run date (YYYY-MM-DD) to summarise")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("evaluate", help="Push 1.0 vs Hermes in a closed loop on one simulated world, reported in "
                       "MLflow (needs the object store and gateway: infra/evaluate.sh starts them)")
    p.add_argument("--days", type=int, default=3, help="closed-loop days per policy")
    p.add_argument("--seed", type=int, default=7, help="world seed (a different seed is a different world)")
    p.add_argument("--users", type=int, default=4000, help="simulated users in the world")
    p.add_argument("--history-days", type=int, default=28, help="days of Push 1.0 history before the loop")
    p.add_argument("--holdout-share", type=float, default=0.10, help="users who get no push in either arm")
    p.add_argument("--variant", default="base", help="the kind of world (hermes simulate --variant)")
    p.add_argument("--cold-start", action="store_true", help="no Push 1.0 history: the first nights are planned "
                   "by the prior policy until a trained model beats it through the gate")
    p.add_argument("--realtime", action="store_true", help="a third arm, Hermes + real-time: Hermes' plan plus the "
                   "streaming trigger engine over each day's events (same world, same random numbers)")
    p.add_argument("--out", help="output folder (default $HERMES_HOME/evaluation/seed=<seed>)")
    p.add_argument("--report-only", action="store_true", help="re-compare and re-report an evaluation already "
                   "lived in --out (same --seed/--days/--users), e.g. after a metric changed")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("import", help="bring your own data: a marketplace's tables (CSV or Parquet) into the raw "
                       "contract's partitions, validated; reports accepted, quarantined (with reasons)")
    p.add_argument("paths", nargs="+", help="one folder with <table>.csv|tsv|parquet or <table>/ folders, or with "
                   "--table the files of one table (CSV separated by commas, semicolons, tabs or pipes)")
    p.add_argument("--table", choices=["users", "items", "item_changes", "events", "push_log"],
                   help="the raw table the given files hold (default: one folder, each table named by its file or folder)")
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser("judge", help="score a night's plan under a simulated world's truth: Push 1.0, a random hour, "
                       "an oracle, the share of the oracle's lift, where the gap is lost, calibration")
    p.add_argument("--ds", required=True, type=_day, help="the nightly run date whose plan (plan/windows) is judged")
    p.add_argument("--json", action="store_true", help="print the whole judgement as JSON")
    p.add_argument("--baseline-warehouse", type=Path, default=None, metavar="PATH",
                   help="judge against the Push 1.0 plan of another warehouse of the same world, under its own push "
                        "history (a closed loop's Push 1.0 arm: <evaluation>/baseline/warehouse); default: this one's")
    p.set_defaults(func=_cmd_judge)

    p = sub.add_parser("settings", help="print the effective settings (secrets masked)")
    p.add_argument("--table", action="store_true", help="also print the README table of variables")
    p.set_defaults(func=_cmd_settings)

    for p in sub.choices.values():
        p.formatter_class = _Help
    args = parser.parse_args(argv)
    settings = None
    try:
        settings = Settings.from_env()
        args.func(args, settings)
    except Exception as e:          # a cause a person can fix: one line naming it; anything else: the traceback
        if isinstance(e, BrokenPipeError) and _stdout_closed():
            # the reader of the output left (`hermes ... | head`): not a server down; exit as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + 13)
        fix = None if os.environ.get("HERMES_DEBUG") else _what_to_fix(e, settings)
        if fix is None:
            raise
        sub.choices[args.command].exit(1, f"hermes {args.command}: error: {fix}\n"
                                          "(HERMES_DEBUG=1 shows the traceback)\n")


if __name__ == "__main__":
    main()
