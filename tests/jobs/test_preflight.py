"""Issue 22: the batches a night writes are read back from the real S3 server and reconciled with the plan when they
land (`hermes_preflight`, scheduled on the `hermes_push_batches` asset), before their first send hour."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.settings import Settings
from core.warehouse import Warehouse
from delivery.batches import read_manifest, write_day
from delivery.objectstore import client
from jobs.preflight import PreflightError, check, run
from jobs.windows import WINDOWS
from tests.delivery.test_batches import META, messages

pytestmark = pytest.mark.slow
DS, DAY = "2026-10-30", "2026-10-31"
BEFORE = datetime(2026, 10, 30, 23, 0, tzinfo=timezone.utc).timestamp()     # the evening before the send day


@pytest.fixture()
def s3_settings(s3_server, tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("HERMES_HOME", str(tmp_path))                 # alerts are recorded under this home
    return Settings.from_env({**s3_server, "HERMES_HOME": str(tmp_path)})


def plan_windows(settings: Settings, assigned: int, unassigned: int = 3) -> None:
    """The night's plan/windows: `assigned` pushes of the hermes policy with a slot, some without, a baseline."""
    part = Warehouse(settings.warehouse).partition(WINDOWS, DS)
    part.mkdir(parents=True, exist_ok=True)
    n = assigned + unassigned + 4
    pq.write_table(pa.table({"user_id": pa.array(range(n), pa.int64()),
                             "policy": ["hermes"] * (assigned + unassigned) + ["baseline"] * 4,
                             "slot": pa.array([9] * assigned + [-1] * unassigned + [12] * 4, pa.int32())}),
                   part / "part-0.parquet")


def alerts(settings: Settings) -> list[dict]:
    path = settings.home / "alerts" / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_batches_that_reconcile_with_the_plan_pass_and_are_reported(s3_settings):
    res = write_day(s3_settings, DAY, messages(range(100)), META)
    plan_windows(s3_settings, 100)
    report = run(s3_settings, DS, {"ds": DS, "send_day": DAY, "messages": 100, "run_id": res.run_id}, now=BEFORE)
    assert report["ok"] and report["problems"] == [] and report["planned"] == report["messages"] == 100
    assert report["hours"] == {"08": 20, "09": 20, "10": 20, "11": 20, "12": 20} and report["late_hours"] == {}
    assert report["past_day"] is False
    saved = json.loads(Warehouse(s3_settings.warehouse).report("preflight", DS, "preflight").read_text())
    assert saved["ok"] and saved["run_id"] == res.run_id
    assert alerts(s3_settings) == []


def test_a_lost_object_a_miscount_and_a_plan_mismatch_fail_with_an_alert(s3_settings):
    res = write_day(s3_settings, DAY, messages(range(100)), META)
    plan_windows(s3_settings, 101)                                   # one planned push never reached the bucket
    lost = read_manifest(s3_settings, DAY)["hours"]["10"]["key"]
    client(s3_settings).delete_object(Bucket=s3_settings.s3_bucket, Key=lost)
    with pytest.raises(PreflightError) as e:
        run(s3_settings, DS, {"ds": DS, "send_day": DAY, "messages": 99, "run_id": res.run_id}, now=BEFORE)
    problems = json.loads(Warehouse(s3_settings.warehouse).report("preflight", DS, "preflight").read_text())["problems"]
    assert len(problems) == 3 and str(e.value) == "; ".join(problems)
    assert "hour=10: object" in problems[0] and "missing" in problems[0]
    assert "announced 99 messages, the manifest holds 100" in problems[1]
    assert "plan/windows assigned 101 pushes of policy hermes, the batches hold 100" in problems[2]
    [alert] = alerts(s3_settings)
    assert alert["kind"] == "batches_invalid" and alert["severity"] == "critical" and DAY in alert["summary"]
    assert all("tok-" not in json.dumps(a) for a in alerts(s3_settings))           # no device token in an alert


def test_a_missing_day_fails_and_a_late_plan_names_the_hours_it_missed(s3_settings):
    # a night no test writes batches for (the S3 server and its bucket are shared by the whole session)
    with pytest.raises(PreflightError, match="no manifest"):
        run(s3_settings, "2099-12-30", now=BEFORE)
    write_day(s3_settings, DAY, messages(range(100)), META)
    plan_windows(s3_settings, 100)
    late = datetime(2026, 10, 31, 10, 30, tzinfo=timezone.utc).timestamp()    # hours 08 and 09 are over
    report = run(s3_settings, DS, now=late)
    assert report["ok"] and report["late_hours"] == {"08": 20, "09": 20}
    kinds = [a["kind"] for a in alerts(s3_settings)]
    assert kinds == ["batches_invalid", "deadline_missed"]
    # checking again (a retry, a run by hand) raises the late plan's alert once
    assert check(s3_settings, DS, now=late)["late_hours"] == {"08": 20, "09": 20}
    run(s3_settings, DS, now=late)
    assert [a["kind"] for a in alerts(s3_settings)] == kinds
    # a past day's plan (a backfill, a replayed world) is not late: it is caught up by hand
    report = run(s3_settings, DS, now=datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp())
    assert report["ok"] and report["past_day"] and report["late_hours"] == {}
    assert [a["kind"] for a in alerts(s3_settings)] == kinds
