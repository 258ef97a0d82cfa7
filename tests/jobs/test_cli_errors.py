"""Issue 22: the `hermes` CLI says what to fix — a usage error naming the option for a bad date, hour or port, and one
line naming the cause (no traceback, no secret) for a missing partition, an unusable HERMES_LEDGER_URL or an object
store that does not answer; every option's help shows its default."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import REPO_ROOT

HERMES = [sys.executable, "-m", "jobs.cli"]


def run(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k != "HERMES_DEBUG"}
    e.update(HERMES_HOME=str(tmp_path), HERMES_WAREHOUSE=str(tmp_path / "warehouse"), **env)
    return subprocess.run(HERMES + args, capture_output=True, text=True, env=e, cwd=REPO_ROOT, timeout=120)


@pytest.mark.parametrize("args, says", [
    (["deliver", "--day", "2026-13-01", "--hour", "3"], "argument --day: '2026-13-01' is not a date YYYY-MM-DD"),
    (["deliver", "--day", "2026-10-31", "--hour", "36"], "argument --hour: '36' is not a plan hour"),
    (["events-api", "--port", "99999"], "argument --port: '99999' is not a TCP port"),
    (["summary", "--ds", "yesterday"], "argument --ds: 'yesterday' is not a date"),
])
def test_a_bad_option_is_a_usage_error_naming_it(args, says, tmp_path):
    out = run(args, tmp_path)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr


def test_an_operational_error_is_one_line_naming_the_cause_without_the_password(tmp_path):
    missing = run(["plan", "--ds", "2026-01-01", "--dry-run", "--no-mlflow"], tmp_path)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "hermes plan: error: plan/selected has no partition ds=2026-01-01" in missing.stderr
    bad_url = run(["stream-status"], tmp_path, HERMES_LEDGER_URL="postgresqll://hermes:s3cret-pw@127.0.0.1/x")
    assert bad_url.returncode == 1 and "Traceback" not in bad_url.stderr
    assert "is not a database URL Hermes can open" in bad_url.stderr and "s3cret-pw" not in bad_url.stderr
    s3 = run(["deliver", "--day", "2026-10-31", "--hour", "3"], tmp_path, HERMES_S3_ENDPOINT="http://127.0.0.1:9",
             AWS_MAX_ATTEMPTS="1")
    assert s3.returncode == 1 and "the object store at http://127.0.0.1:9 failed" in s3.stderr
    assert "Traceback" not in s3.stderr
    debug = run(["plan", "--ds", "2026-01-01", "--dry-run", "--no-mlflow"], tmp_path, HERMES_DEBUG="1")
    assert "Traceback" in debug.stderr                          # the traceback, for whoever wants it


def test_every_option_shows_its_default_in_the_help(tmp_path):
    out = run(["evaluate", "--help"], tmp_path)
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "(default: 3)" in text and "(default: 4000)" in text and "(default: base)" in text


def test_a_reader_that_leaves_early_is_not_a_server_that_did_not_answer(tmp_path):
    """`hermes stream-status | head -20` (make run) failed as "a server Hermes needs did not answer: Broken pipe":
    a closed stdout is the reader's choice, and the CLI exits as Unix tools do (128 + SIGPIPE), silently."""
    code = ("import sys; from jobs import cli\n"
            "cli._cmd_settings = lambda args, settings: [print('line', i) for i in range(200_000)]\n"
            "cli.main(['settings'])\n")
    e = {k: v for k, v in os.environ.items() if k != "HERMES_DEBUG"}
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO_ROOT,
                         env={**e, "HERMES_HOME": str(tmp_path)})
    assert p.stdout.readline() == b"line 0\n"
    p.stdout.close()                                    # the reader leaves, as `head` does
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141 and "did not answer" not in err and "Traceback" not in err, err
