"""Issue 22: a validation leaves Hermes' lines in the task log, not Great Expectations' bookkeeping (a fresh
interpreter: GX's loggers are set at its import, which happens once per process)."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

CODE = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
from core.quiet import quiet_third_party
quiet_third_party()                      # what jobs/tasks.py does at import, before GX is imported
import pandas as pd
import great_expectations as gx
from expectations.gate import validate
for table in ("plan/a", "plan/b"):
    report = validate(pd.DataFrame({"a": [1, None]}), table, [gx.expectations.ExpectColumnValuesToNotBeNull(column="a")])
    logging.getLogger("jobs.validate_output").info("%s: %s", table, "passed" if report.success else "failed")
"""


def test_validations_log_hermes_lines_not_great_expectations_bookkeeping():
    out = subprocess.run([sys.executable, "-c", CODE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert [ln for ln in lines if ln.startswith("jobs.")] == ["jobs.validate_output: plan/a: failed",
                                                              "jobs.validate_output: plan/b: failed"]
    assert not [ln for ln in lines if ln.startswith("great_expectations")], lines[:5]
