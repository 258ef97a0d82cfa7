"""The object store push batches live in: any S3 endpoint through boto3 (SeaweedFS on 127.0.0.1 by default).

`python -m delivery.objectstore ensure-bucket` creates the configured bucket if it is missing (infra/s3.sh
runs it after starting the local server).
"""
from __future__ import annotations

import sys

from core.settings import Settings


class ObjectStoreError(RuntimeError):
    pass


def client(settings: Settings):
    import boto3
    from botocore.config import Config

    if not settings.s3_access_key or not settings.s3_secret_key:
        raise ObjectStoreError("S3 credentials are not set: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                               "(infra/env.sh generates local ones into $HERMES_HOME/secrets.env)")
    return boto3.client(
        "s3", endpoint_url=settings.s3_endpoint, aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key, region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"},
                      connect_timeout=5, read_timeout=60))


def ensure_bucket(settings: Settings) -> str:
    from botocore.exceptions import ClientError

    s3 = client(settings)
    try:
        s3.head_bucket(Bucket=settings.s3_bucket)
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise ObjectStoreError(f"cannot reach bucket {settings.s3_bucket!r} at {settings.s3_endpoint}: {e}") \
                from None
        s3.create_bucket(Bucket=settings.s3_bucket)
    return settings.s3_bucket


def list_keys(s3, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv != ["ensure-bucket"]:
        sys.exit("usage: python -m delivery.objectstore ensure-bucket")
    settings = Settings.from_env()
    print(f"bucket {ensure_bucket(settings)} ready at {settings.s3_endpoint}")


if __name__ == "__main__":
    main()
