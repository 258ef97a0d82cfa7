"""bench/generalization.py's verdict on issue #20's night-1 targets: counts per target, held-out rows apart."""
from __future__ import annotations

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "generalization.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_generalization", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(variant, seed, held_out, lift, timing, calibration, delivered=1.0):
    return {"variant": variant, "seed": seed, "held_out": held_out, "oracle_lift_share": lift,
            "timing": {"activity_ratio_chosen_vs_best": timing},
            "calibration": {"expected_over_true": calibration, "expected_over_true_as_delivered": delivered}}


def test_the_bench_counts_each_target_and_names_the_rows_that_miss_it():
    rows = [_row("base", 7, False, 0.66, 0.87, 0.59, 0.58),
            _row("base", 101, True, 0.50, 0.79, 1.10, 1.02),
            _row("random", 202, True, 0.43, 0.87, 0.91, 0.89)]
    lines = _bench().targets(rows)
    assert lines[1] == "targets (issue #20):"
    assert lines[2] == "  share of the oracle's lift >= 50 %: 2/3 rows (1/2 held out); missed by random 202*"
    assert lines[3] == "  timing ratio >= 0.8: 2/3 rows (1/2 held out); missed by base 101*"
    assert lines[4] == "  expected / true within 1 +- 0.1: 2/3 rows (2/2 held out); missed by base 7"
    assert lines[5] == ("  expected / opens as delivered within 1 +- 0.1: 1/3 rows (1/2 held out); missed by base 7, "
                        "random 202*")
