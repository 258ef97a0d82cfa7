"""The object store push batches live in: any S3 endpoint through boto3 (SeaweedFS on 127.0.0.1 by default).

`python -m delivery.objectstore ensure-bucket` creates the configured bucket if it is missing and checks that the
store takes a write (infra/s3.sh runs it after starting the local server).
"""
from __future__ import annotations

import sys

from core.settings import Settings


class ObjectStoreError(RuntimeError):
    pass


def client(settings: Settings, attempts: int = 5, read_timeout: float = 60):
    import boto3
    from botocore.config import Config

    if not settings.s3_access_key or not settings.s3_secret_key:
        raise ObjectStoreError("S3 credentials are not set: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                               "(infra/env.sh generates local ones into $HERMES_HOME/secrets.env)")
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint, aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": attempts, "mode": "standard"},
                      connect_timeout=5, read_timeout=read_timeout))


def ensure_bucket(settings: Settings, probe_seconds: float = 60.0) -> str:
    """Create the bucket if it is missing, then write, read back and delete a small object: a store that answers
    but cannot write (SeaweedFS on a nearly full disk has no volume to put data in) fails here, once, with its
    reason, not in every later write after five retries. `probe_seconds` bounds the wait for a store that has
    just started (its volume server registers with its master a moment after the S3 port answers)."""
    import time
    import uuid

    from botocore.exceptions import BotoCoreError, ClientError

    s3 = client(settings)
    try:
        s3.head_bucket(Bucket=settings.s3_bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise ObjectStoreError(f"cannot reach bucket {settings.s3_bucket!r} at {settings.s3_endpoint}: {e}") \
                from None
        s3.create_bucket(Bucket=settings.s3_bucket)
    s3 = client(settings, attempts=1, read_timeout=10)  # the probe's own loop retries, and says why it gave up
    key, body = f"_hermes/probe/{uuid.uuid4().hex}", b"hermes write probe"
    deadline = time.monotonic() + probe_seconds
    while True:
        try:
            s3.put_object(Bucket=settings.s3_bucket, Key=key, Body=body)
            if s3.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read() != body:
                raise ObjectStoreError(f"bucket {settings.s3_bucket!r} at {settings.s3_endpoint} returned other "
                                       f"bytes than were written to {key}")
            s3.delete_object(Bucket=settings.s3_bucket, Key=key)
            return settings.s3_bucket
        except (ClientError, BotoCoreError) as e:
            if time.monotonic() >= deadline:
                raise ObjectStoreError(
                    f"bucket {settings.s3_bucket!r} at {settings.s3_endpoint} takes no writes after "
                    f"{probe_seconds:.0f} s: {e} (a local SeaweedFS refuses writes when its disk has less than "
                    f"HERMES_S3_MIN_FREE free; its log is "
                    f"{settings.home / 'logs' / 's3.log'})") from None
            time.sleep(1.0)  # polls the store until it takes the write or the deadline passes


def list_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m delivery.objectstore")
    p.add_argument("command", choices=["ensure-bucket"])
    p.add_argument("--probe-seconds", type=float, default=60.0, help="how long a just-started store may take to write")
    args = p.parse_args(argv)
    settings = Settings.from_env()
    try:
        print(f"bucket {ensure_bucket(settings, args.probe_seconds)} ready at {settings.s3_endpoint} (a write read back)")
    except ObjectStoreError as e:
        sys.exit(f"object store: {e}")


if __name__ == "__main__":
    main()
