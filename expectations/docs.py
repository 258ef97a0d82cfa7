"""Browsable validation: one HTML page per nightly date with every table the night validated and every rule it
checked, passed or failed (the role of Great Expectations' Data Docs, built from Hermes' own reports).

    reports/validation/ds=<ds>/index.html      (rewritten after each table's report by jobs/validate_raw.py and jobs/validate_output.py)

A raw table shows rows in / kept / quarantined, each row rule with the rows it quarantined and examples (0: passed),
its table-level failures (a missing partition, too many bad rows, counts that do not add up) and warnings, and the
earlier partitions it validated first. An output table shows each expectation with its verdict and what it observed.
A table that failed before its rules ran (a missing partition) has its page too: the failure is the report.
Everything shown is escaped: table contents (examples) never become markup.
"""
from __future__ import annotations

import json
from html import escape
from pathlib import Path

from core.warehouse import Warehouse

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:6px 0 18px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top;font-size:13px}th{background:#f4f4f4}.ok{color:#1a7f37}.bad{color:#b00020;font-weight:600}
.warn{color:#9a6700}h2{margin-top:28px}code{font-size:12px}"""


def _status(ok: bool) -> str:
    return '<span class="ok">passed</span>' if ok else '<span class="bad">FAILED</span>'


def _table_section(doc: dict) -> str:
    name = escape(str(doc.get("table")))
    out = [f'<h2 id="{escape(str(doc.get("table")).replace("/", "_"))}">{name} {_status(doc.get("success", False))}</h2>']
    facts = []
    for key, label in (("rows_in", "rows in"), ("rows", "rows kept"), ("rows_quarantined", "quarantined"),
                       ("bad_share", "bad share"), ("max_bad_share", "allowed bad share"),
                       ("expectations", "rules checked"), ("config_version", "config version")):
        if doc.get(key) is not None:
            v = doc[key]
            v = f"{100 * v:.4f} %" if key in ("bad_share", "max_bad_share") else (f"{v:,}" if isinstance(v, int) else v)
            facts.append(f"{label}: <b>{escape(str(v))}</b>")
    out.append("<p>" + " · ".join(facts) + "</p>")
    for f in doc.get("failures", []):
        out.append(f'<p class="bad">{escape(f)}</p>')
    for w in doc.get("warnings", []):
        out.append(f'<p class="warn">warning: {escape(w)}</p>')
    if doc.get("rules"):                                    # a raw table: row rules, with what each quarantined
        by_rule, examples = doc.get("quarantined_by_rule", {}), doc.get("examples", {})
        out.append("<table><tr><th>row rule</th><th>verdict</th><th>rows quarantined</th><th>examples</th></tr>")
        for rule in doc["rules"]:
            n = by_rule.get(rule, 0)
            out.append(f"<tr><td><code>{escape(rule)}</code></td><td>{_status(n == 0)}</td><td>{n:,}</td>"
                       f"<td>{escape(', '.join(examples.get(rule, [])))}</td></tr>")
        out.append("</table>")
    if doc.get("results"):                                  # an output table: each expectation's verdict
        out.append("<table><tr><th>expectation</th><th>verdict</th><th>observed</th></tr>")
        for r in doc["results"]:
            out.append(f"<tr><td><code>{escape(r['rule'])}</code></td><td>{_status(r['success'])}</td>"
                       f"<td>{escape(r['detail'])}</td></tr>")
        out.append("</table>")
    older = doc.get("older_partitions") or {}
    if older:
        out.append(f"<details><summary>{len(older)} earlier partitions validated first</summary><table><tr><th>ds</th>"
                   "<th>rows in</th><th>kept</th><th>quarantined</th></tr>")
        for d, c in sorted(older.items()):
            out.append(f"<tr><td>{escape(d)}</td><td>{c.get('rows_in', 0):,}</td><td>{c.get('rows_kept', 0):,}</td>"
                       f"<td>{c.get('rows_quarantined', 0):,}</td></tr>")
        out.append("</table></details>")
    return "\n".join(out)


def render(wh: Warehouse, ds: str) -> Path | None:
    """Write reports/validation/ds=<ds>/index.html from the date's JSON reports; returns its path."""
    folder = wh.report("validation", ds, "x").parent
    docs = []
    for f in sorted(folder.glob("*.json")):
        try:
            docs.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    if not docs:
        return None
    failed = [d for d in docs if not d.get("success", False)]
    head = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Validation {escape(ds)} · Hermes"
            f"</title><style>{STYLE}</style></head><body><h1>Validation of the night of {escape(ds)}</h1>"
            f"<p>{len(docs)} tables: {len(docs) - len(failed)} passed, "
            f"<span class='{'bad' if failed else 'ok'}'>{len(failed)} failed</span></p><table><tr><th>table</th>"
            "<th>verdict</th><th>rows</th><th>quarantined</th></tr>")
    rows = "".join(f"<tr><td><a href='#{escape(str(d.get('table')).replace('/', '_'))}'>{escape(str(d.get('table')))}"
                   f"</a></td><td>{_status(d.get('success', False))}</td><td>{d.get('rows', '')}</td>"
                   f"<td>{d.get('rows_quarantined', '')}</td></tr>" for d in docs)
    body = "\n".join(_table_section(d) for d in docs)
    out = folder / "index.html"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(head + rows + "</table>" + body + "</body></html>")
    tmp.replace(out)
    return out
