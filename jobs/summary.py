"""`hermes summary`: what a nightly run produced for a date — row counts, report verdicts, paths, UIs.

Reads only Parquet footers and JSON reports, so it is instant at any scale.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from core.contract import PARTITIONED, RAW_TABLES
from core.settings import Settings
from core.warehouse import DERIVED_TABLES, PLAN_TABLES, Warehouse
from jobs.validate_raw import quarantine_lines


def parquet_rows(path: Path) -> int | None:
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def summary(settings: Settings, ds: str) -> list[str]:
    wh = Warehouse(settings.warehouse)
    lines = [f"Hermes nightly, ds={ds}", f"warehouse: {wh.root}", "", "inputs (raw contract):"]
    for table in RAW_TABLES:
        path = wh.raw_partition(table, ds) if table in PARTITIONED else wh.raw(table)
        report_path = wh.report("validation", ds, f"raw_{table}")
        verdict, rep = "not validated", {}
        if report_path.exists():
            rep = json.loads(report_path.read_text())
            verdict = (f"{rep['expectations']} rules passed" if rep["success"]
                       else f"FAILED: {len(rep['failures'])} rule(s)")
            if rep.get("rows_in") is not None:
                verdict += (f"; {rep['rows_in']:,} in = {rep['rows_kept']:,} kept + {rep['rows_quarantined']:,} "
                            f"quarantined")
        scope = f"ds={ds}" if table in PARTITIONED else "snapshot"
        lines.append(f"  raw/{table:<14}{scope:<15}{_fmt(parquet_rows(path)):>12} rows   {verdict}")
        lines += quarantine_lines(rep)
    snapshot = wh.config_snapshot(ds)
    if snapshot.exists():
        lines += ["", f"config version: {json.loads(snapshot.read_text())['version']} ({snapshot})"]
    lines += ["", "outputs:"]
    for name in DERIVED_TABLES:
        path = wh.partition(name, ds)
        lines.append(f"  {name:<30}{_fmt(parquet_rows(path)):>12} rows   {path}")
    counts = {name: parquet_rows(wh.partition(name, ds)) for name in PLAN_TABLES}
    if all(v is not None for v in counts.values()):
        a, e, s = (counts[n] for n in PLAN_TABLES)
        lines += ["", f"fatigue: {a:,} audience pairs = {e:,} eligible + {s:,} suppressed"
                      f" ({'reconciled' if a == e + s else 'DOES NOT RECONCILE'})"]
        reasons = _group_count(wh.partition("plan/suppressed", ds), "reason")
        lines += [f"  suppressed {k:<18}{v:>10,}" for k, v in reasons]
        lines += ["  audience by scene:"] + [f"    {k:<22}{v:>10,}"
                                             for k, v in _group_count(wh.partition("plan/audiences", ds), "scene_id")]
    train_report, gate_report = wh.report("training", ds, "train"), wh.report("training", ds, "gate")
    if train_report.exists():
        t = json.loads(train_report.read_text())
        oracle = f", oracle AUC {t['oracle_auc']:.4f}" if t.get("oracle_auc") else ""
        if t.get("oracle_auc_attainable"):
            oracle += f" (attainable {t['oracle_auc_attainable']:.4f})"
        if t.get("policy") == "prior":
            lines += ["", f"model: hermes-ctr v{t['version']} is the PRIOR policy (training/prior.py), not trained: "
                          f"{t['reason']}; MLflow run {t['run_id']}"]
        else:
            lines += ["", f"model: hermes-ctr v{t['version']} ({t['model_kind']}), holdout AUC {t['holdout']['auc']:.4f}"
                          f"{oracle}, log loss {t['holdout']['log_loss']:.4f}, calibration error "
                          f"{t['holdout']['calibration_error']:.4f}; MLflow run {t['run_id']}"]
    if gate_report.exists():
        g = json.loads(gate_report.read_text())
        lines.append(f"gate: version {g['candidate_version']} {g['decision']} -> @{g['alias']} ({g['reason']})")
    windows_report = wh.report("windows", ds, "windows")
    if windows_report.exists():
        w = json.loads(windows_report.read_text())
        if w.get("model_policy"):
            lines.append(f"planned by: hermes-ctr v{w['model_version']}, the {w['model_policy']} policy; users at a "
                         f"random allowed hour {100 * w['hour_explore_share']:.0f} %")
    sel = wh.partition("plan/selected", ds)
    if sel.exists():
        lines += ["selected scene per user (Hermes):"] + [f"    {k:<22}{v:>10,}" for k, v in _group_count(sel, "scene_id")]
        base = _group_count(wh.partition("plan/baseline", ds), "scene_id")
        lines += [f"baseline (Push 1.0): scene {base[0][0] if base else '-'} for {sum(v for _, v in base):,} users"]
    plan_json = wh.report("plan", ds, "plan")
    if plan_json.exists():
        r = json.loads(plan_json.read_text())
        h, b = r["policies"]["hermes"], r["policies"]["baseline"]
        same = r["same_users"]
        lines += ["", f"send windows for {r['send_day']} (UTC hours; batches policy {r['active_policy']}):",
                  f"  Hermes   {h['pushes']:>8,} pushes, expected opens {h['expected_opens']:>9,.1f} "
                  f"({100 * h['expected_open_rate']:.2f}%), peak {h['peak_load']:,}/h vs capacity {h['capacity'][0]:,}, "
                  f"{h['explored']:,} explored, not sent {h['not_sent'] or 'none'}",
                  f"  baseline {b['pushes']:>8,} pushes, expected opens {b['expected_opens']:>9,.1f} "
                  f"({100 * b['expected_open_rate']:.2f}%), peak {b['peak_load']:,}/h",
                  *([f"  expected opens of feeds: {r['feed_estimate']['note']}"]
                    if r.get("feed_estimate", {}).get("expected_is_floor") else []),
                  *([f"  scenes: {r['scene_estimate']['note']}"] if r.get("scene_estimate", {}).get("unseen_scenes") else []),
                  f"  same {same['users']:,} users: Hermes/baseline expected opens = "
                  f"{same['ratio']:.2f}x" if same["ratio"] else "  no common users",
                  f"  optimiser: {100 * (h['loss_vs_unconstrained'] or 0):.2f}% below each user's best hour "
                  f"(capacity + exploration), <= {100 * (h['gap_to_upper_bound'] or 0):.3f}% from the optimum",
                  f"  report: {plan_json.with_suffix('.html')}"]
    batches = wh.report("batches", ds, "batches")
    if batches.exists():
        bt = json.loads(batches.read_text())
        lines += [f"push batches: {bt['messages']:,} messages in {sum(1 for n in bt['hours'] if n)} hourly objects, "
                  f"manifest {bt['manifest']} (run {bt['run_id']})"]
    preflight = wh.report("preflight", ds, "preflight")
    if preflight.exists():
        pf = json.loads(preflight.read_text())
        lines += ["preflight (hermes_preflight, on the batches asset): " + (
            f"ok, {pf['messages']:,} messages reconciled with the plan" if pf["ok"]
            else f"FAILED - {'; '.join(pf['problems'])}") + (
            f"; {len(pf['late_hours'])} hours were over when the plan landed" if pf.get("late_hours") else "")]
    lines += _delivery_lines(settings, ds)
    docs = wh.report('validation', ds, 'x').parent / "index.html"
    lines += ["", f"validation reports: {wh.report('validation', ds, 'x').parent}"
              + (f" (every table and rule, passed or failed: {docs})" if docs.exists() else "")]
    return lines


def _delivery_lines(settings: Settings, ds: str) -> list[str]:
    """Delivered / dead-lettered / pending of the send day, from the delivery ledger (if it exists)."""
    from datetime import date, timedelta

    if settings.ledger_url.startswith("sqlite:///") and not Path(settings.ledger_url[len("sqlite:///"):]).exists():
        return []
    from delivery.ledger import Ledger

    day = (date.fromisoformat(ds) + timedelta(days=1)).isoformat()
    ledger = Ledger(settings.ledger_url)
    states = ledger.states(day)
    reasons = ledger.dead_letter_reasons(day)
    ledger.dispose()
    if not states:
        return []
    total = sum(states.values())
    return [f"delivery of {day}: {total:,} messages: {states.get('acked', 0):,} delivered (acknowledged by the gateway), "
            f"{states.get('dead_letter', 0):,} dead-lettered {dict(reasons) if reasons else ''}, "
            f"{states.get('pending', 0):,} pending"]


def _group_count(path: Path, column: str) -> list[tuple[str, int]]:
    table = pq.read_table(path, columns=[column])
    counts = table.group_by(column).aggregate([(column, "count")]).to_pylist()
    return sorted(((r[column], r[f"{column}_count"]) for r in counts), key=lambda kv: -kv[1])


def _fmt(n: int | None) -> str:
    return "missing" if n is None else f"{n:,}"


def main(argv: list[str] | None = None) -> None:
    """`python -m jobs.summary --ds YYYY-MM-DD` (the same as `hermes summary`)."""
    import argparse
    from datetime import date

    p = argparse.ArgumentParser(prog="python -m jobs.summary", description=__doc__)
    p.add_argument("--ds", required=True, type=lambda s: date.fromisoformat(s).isoformat())
    print("\n".join(summary(Settings.from_env(), p.parse_args(argv).ds)))


if __name__ == "__main__":
    main()
