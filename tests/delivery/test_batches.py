"""Push batches in the real S3 server: atomic replacement, manifests, and a reader that refuses bad batches."""
from __future__ import annotations

import json
import os
import socket
import subprocess

import pyarrow as pa
import pytest

from core.settings import Settings
from delivery.batches import BatchError, day_prefix, idempotency_key, manifest_key, read_batch, read_manifest, write_day
from delivery.objectstore import client, list_keys
from tests.conftest import REPO, free_port_block

pytestmark = pytest.mark.slow
META = {"plan_ds": "2026-10-30", "policy": "hermes", "model_version": "3", "config_version": "cfg-test"}


@pytest.fixture()
def s3_settings(s3_server, tmp_path) -> Settings:
    return Settings.from_env({**s3_server, "HERMES_HOME": str(tmp_path)})


def messages(users: range, hour_of=lambda u: u % 5 + 8, day="2026-10-31") -> pa.Table:
    users = list(users)
    return pa.table({
        "idempotency_key": [idempotency_key(u, "guess_you_like", day, "nightly") for u in users],
        "user_id": pa.array(users, pa.int64()), "device_token": [f"tok-{u}" for u in users],
        "scene_id": ["guess_you_like"] * len(users), "hour": pa.array([hour_of(u) for u in users], pa.int8()),
    })


def all_messages(settings, day: str) -> list[dict]:
    out = []
    for h in range(24):
        t, _ = read_batch(settings, day, h)
        out += [] if t is None else t.to_pylist()
    return out


def test_a_day_is_written_per_hour_with_a_manifest_and_read_back_verified(s3_settings):
    day = "2026-10-31"
    res = write_day(s3_settings, day, messages(range(100)), META)
    man = read_manifest(s3_settings, day)
    assert man["messages"] == 100 == res.messages and man["policy"] == "hermes" and man["model_version"] == "3"
    assert sum(h["messages"] for h in man["hours"].values()) == 100
    assert {h for h, e in man["hours"].items() if e["messages"]} == {"08", "09", "10", "11", "12"}
    got = all_messages(s3_settings, day)
    assert sorted(m["user_id"] for m in got) == list(range(100))
    keys = list_keys(client(s3_settings), s3_settings.s3_bucket, day_prefix(day))
    assert all(k.startswith(f"batches/ds={day}/hour=") or k == manifest_key(day) for k in keys)


def test_rewriting_a_day_replaces_it_without_duplicates_or_leftovers(s3_settings):
    day = "2026-11-01"
    write_day(s3_settings, day, messages(range(100), day=day), META)
    # the re-plan moves every user to another hour and drops users 80-99
    res = write_day(s3_settings, day, messages(range(80), hour_of=lambda u: u % 3 + 14, day=day), META)
    got = all_messages(s3_settings, day)
    assert len(got) == 80 and len({m["idempotency_key"] for m in got}) == 80
    assert {m["hour"] for m in got} == {14, 15, 16}
    parquet = [k for k in list_keys(client(s3_settings), s3_settings.s3_bucket, day_prefix(day)) if k.endswith(".parquet")]
    assert len(parquet) == 3 and all(f"run={res.run_id}" in k for k in parquet)
    assert res.deleted_objects == 5
    # the key does not depend on the hour: a moved push keeps its identity
    assert idempotency_key(7, "guess_you_like", day, "nightly") in {m["idempotency_key"] for m in got}


def test_the_reader_refuses_a_day_without_manifest(s3_settings):
    with pytest.raises(BatchError, match="no manifest"):
        read_batch(s3_settings, "2026-12-24", 10)


def test_the_reader_refuses_an_object_that_does_not_match_its_manifest(s3_settings):
    day = "2026-11-02"
    write_day(s3_settings, day, messages(range(20), day=day), META)
    man = read_manifest(s3_settings, day)
    key = man["hours"]["08"]["key"]
    s3 = client(s3_settings)
    body = s3.get_object(Bucket=s3_settings.s3_bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=s3_settings.s3_bucket, Key=key, Body=body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(BatchError, match="does not match the manifest"):
        read_batch(s3_settings, day, 8)
    s3.delete_object(Bucket=s3_settings.s3_bucket, Key=key)
    with pytest.raises(BatchError, match="is missing"):
        read_batch(s3_settings, day, 8)
    # a manifest claiming more messages than the object holds
    other = man["hours"]["09"]
    man["hours"]["09"] = {**other, "messages": other["messages"] + 1}
    s3.put_object(Bucket=s3_settings.s3_bucket, Key=manifest_key(day), Body=json.dumps(man).encode())
    with pytest.raises(BatchError, match="manifest says"):
        read_batch(s3_settings, day, 9)


def test_duplicate_idempotency_keys_are_refused_before_anything_is_written(s3_settings):
    day = "2026-11-03"
    t = messages(range(10), day=day)
    dup = pa.concat_tables([t, t.slice(0, 1)])
    with pytest.raises(BatchError, match="not unique"):
        write_day(s3_settings, day, dup, META)
    assert list_keys(client(s3_settings), s3_settings.s3_bucket, day_prefix(day)) == []


def test_wrong_credentials_are_rejected_by_the_server(s3_server, tmp_path):
    from botocore.exceptions import ClientError

    bad = Settings.from_env({**s3_server, "HERMES_HOME": str(tmp_path), "AWS_SECRET_ACCESS_KEY": "wrong-secret-xx"})
    with pytest.raises(ClientError):
        client(bad).list_objects_v2(Bucket=bad.s3_bucket)


def test_a_store_that_cannot_write_fails_its_start_with_the_reason_and_is_stopped(tmp_path):
    """SeaweedFS on a disk below its free-space floor answers, creates the bucket and then refuses every write (the
    CI of stop 31: 2.4 GB free of a 252 GB disk was under weed mini's 1 % floor, and every S3 test failed slowly).
    infra/s3.sh start now proves a write; here the floor is set above any disk's size."""
    port = free_port_block()
    env = {**os.environ, "HERMES_HOME": str(tmp_path), "HERMES_S3_ENDPOINT": f"http://127.0.0.1:{port}",
           "AWS_ACCESS_KEY_ID": "hermestest", "AWS_SECRET_ACCESS_KEY": "hermes-test-secret-0123456789",
           "HERMES_S3_MIN_FREE": "1000TiB", "HERMES_S3_PROBE_SECONDS": "1"}
    out = subprocess.run(["bash", str(REPO / "infra" / "s3.sh"), "start"], env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "bucket 'hermes' at http://127.0.0.1:" in out.stderr and "takes no writes" in out.stderr, out.stderr
    assert str(tmp_path / "logs" / "s3.log") in out.stderr
    assert not (tmp_path / "run" / "s3.pid").exists()  # stopped: nothing left holding the port
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the closed connections' TIME_WAIT is no listener
        s.bind(("127.0.0.1", port))
