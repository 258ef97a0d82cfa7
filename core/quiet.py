"""Hermes' own lines first in every task log: third-party noise turned down once per process.

Measured on a `make run` night (10k users): 214 of the nightly log's 4,376 lines were Hermes'. The rest, by count:
- 2,320 lines of Airflow `DeprecatedImportWarning`s raised while skops walks the modules it may load (skops/io/_utils);
- 209 lines of Great Expectations' "Skipping registering function ..." at import, 124 "Created temporary directory
  ... for ephemeral docs site" (one per validated table);
- Airflow's own task bookkeeping (kept: it is what the UI shows).
What is silenced here is filtered by its origin, not by level: a warning Hermes' code raises still shows.
"""
from __future__ import annotations

import logging
import warnings

_DONE = False


def quiet_third_party() -> None:
    global _DONE
    if _DONE:
        return
    _DONE = True
    # skops probes every attribute of the modules it scans; Airflow 3 warns on each deprecated alias it touches
    warnings.filterwarnings("ignore", message=r"The `airflow\.", module=r"skops\.")
    warnings.filterwarnings("ignore", message=r".*is deprecated.*", category=DeprecationWarning, module=r"skops\.")
    for name in ("great_expectations", "great_expectations._docs_decorators",
                 "great_expectations.data_context.types.base", "py4j", "py4j.clientserver"):
        logging.getLogger(name).setLevel(logging.WARNING)
