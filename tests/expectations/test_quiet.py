"""Issue 22: a validation leaves Hermes' lines in the task log, not Great Expectations' bookkeeping (a fresh
interpreter: GX's loggers are set at its import, which happens once per process), and leaves no validated frame
behind in memory."""
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



def test_validated_frames_do_not_pile_up():
    """GX's context and batch hold the frame in reference cycles; validate() collects them, so a month of
    partitions validated one after another does not keep every one in memory. The automatic collector is off
    here: only validate()'s own collection frees the frames of the calls before (the frame being validated is
    still the caller's during its own call)."""
    import gc
    import weakref

    import great_expectations as gx
    import pandas as pd

    from expectations.gate import validate

    alive, reports = [], []
    gc.disable()
    try:
        for day in range(3):
            frame = pd.DataFrame({"a": [1.0, None, float(day)]})
            alive.append(weakref.ref(frame))
            failing: dict = {}
            reports.append((validate(frame, f"raw/x{day}", [gx.expectations.ExpectColumnValuesToNotBeNull(column="a")],
                                     failing), failing))
            del frame
        assert [ref() is None for ref in alive[:2]] == [True, True]    # the frames of the calls before are freed
    finally:
        gc.enable()
    assert [(r.success, f) for r, f in reports] == [(False, {"a: expect_column_values_to_not_be_null": [1]})] * 3
