"""The dry-run report of a nightly plan: what would go out tomorrow, when, and what it is expected to earn.

Writes reports/plan/ds=<ds>/plan.json and plan.html (self-contained: inline SVG chart, no scripts, no
network) and logs both to MLflow (experiment `hermes-plan`, one run per ds, with the headline metrics).
Contents: volume per scene, suppressed counts by reason, hourly load against capacity for Hermes and the
baseline, expected open rate per scene, expected opens of Hermes vs the baseline on the same users, the
send-window optimiser's loss against the unconstrained optimum, and the listings the most pushes lead with.
"""
from __future__ import annotations

import html
import json
import logging
from collections import Counter

from core.settings import Settings
from core.warehouse import Warehouse

log = logging.getLogger(__name__)
EXPERIMENT = "hermes-plan"


def build(wh: Warehouse, ds: str, loaded) -> dict:
    import numpy as np
    import pyarrow.compute as pc

    from jobs.windows import WINDOWS, feed_interest, send_day

    win = wh.read_arrow(WINDOWS, ds, ["user_id", "policy", "scene_id", "item_ids", "slot", "p_open", "explored",
                                      "reason"] + [c for c in ("item_interest",) if c in wh.schema(WINDOWS, ds).names])
    stats = json.loads(wh.report("windows", ds, "windows").read_text())
    sup = wh.read_arrow("plan/suppressed", ds, ["reason"])["reason"].to_pylist()
    n_aud = wh.read_arrow("plan/audiences", ds, ["user_id"]).num_rows
    n_el = wh.read_arrow("plan/eligible", ds, ["user_id"]).num_rows
    pol = {}
    for policy in ("hermes", "baseline"):
        t = win.filter(pc.equal(win["policy"], policy))
        d = {c: t[c].to_numpy(zero_copy_only=False) for c in ("user_id", "scene_id", "slot", "p_open", "explored")}
        d["reason"] = t["reason"].to_pylist()
        d["items"] = pc.fill_null(pc.list_value_length(t["item_ids"]), 0).to_numpy()
        # each push's first item (-1 for none): the flat items at each non-empty feed's start
        flat = pc.list_flatten(t["item_ids"]).to_numpy(zero_copy_only=False).astype(np.int64)
        has = d["items"] > 0
        d["lead"] = np.full(len(has), -1, dtype=np.int64)
        d["lead"][has] = flat[(np.cumsum(d["items"]) - d["items"])[has]]
        d["interest"] = feed_interest(t)
        pol[policy] = d
    scenes = {}
    h = pol["hermes"]
    got = h["slot"] >= 0
    for sid in sorted(set(h["scene_id"].tolist())):
        m = (h["scene_id"] == sid) & got
        scenes[sid] = {"pushes": int(m.sum()), "expected_opens": float(h["p_open"][m].sum()),
                       "expected_open_rate": float(h["p_open"][m].mean()) if m.any() else 0.0,
                       "items_per_feed": float(h["items"][m].mean()) if m.any() else 0.0}
    # the same users: those both policies would push
    b = pol["baseline"]
    hb = {u: p for u, p, s in zip(h["user_id"].tolist(), h["p_open"].tolist(), h["slot"].tolist()) if s >= 0}
    bb = {u: p for u, p, s in zip(b["user_id"].tolist(), b["p_open"].tolist(), b["slot"].tolist()) if s >= 0}
    common = sorted(set(hb) & set(bb))
    same = {"users": len(common), "hermes_expected_opens": float(sum(hb[u] for u in common)),
            "baseline_expected_opens": float(sum(bb[u] for u in common))}
    same["ratio"] = same["hermes_expected_opens"] / same["baseline_expected_opens"] \
        if same["baseline_expected_opens"] > 0 else None
    per_policy = {}
    for name, d in pol.items():
        st = stats["policies"][name]
        ok = d["slot"] >= 0
        per_policy[name] = {
            "planned": int(len(d["slot"])), "pushes": int(ok.sum()), "expected_opens": float(d["p_open"][ok].sum()),
            "expected_open_rate": float(d["p_open"][ok].mean()) if ok.any() else 0.0,
            "explored": int(d["explored"].sum()), "not_sent": dict(Counter(r for r in d["reason"] if r)),
            # pushes whose feed holds an item the user favourited or carted, or one of a seller they follow
            "interest_share": float(d["interest"][ok].mean()) if ok.any() else 0.0,
            "scenes": len(set(d["scene_id"][ok].tolist())), "load": st["load"], "capacity": st["capacity"],
            "peak_load": int(max(st["load"])),
            "loss_vs_unconstrained": st.get("loss_vs_unconstrained"),
            "gap_to_upper_bound": st.get("gap_to_upper_bound"),
        }
    return {"ds": ds, "send_day": send_day(ds), "config_version": loaded.version,
            "model_version": stats.get("model_version"), "active_policy": stats.get("active_policy"),
            "timing_elasticity": stats.get("timing_elasticity"), "model_policy": stats.get("model_policy"),
            "hour_explore_share": stats.get("hour_explore_share"), "why_this_policy": _why(wh, ds),
            # the model version's feed-level recalibration the windows applied (its c: what a longer feed adds)
            "recalibration": stats.get("recalibration"),
            "feed_estimate": feed_estimate(h["items"][got], stats.get("recalibration")),
            "lead_listings": lead_concentration(h["lead"][got & (h["items"] > 0)]),
            "scene_estimate": scene_estimate(scenes, stats.get("history_scenes"), stats.get("model_policy")),
            "funnel": {"audience_pairs": n_aud, "eligible_pairs": n_el, "suppressed_pairs": len(sup),
                       "planned_users": per_policy["hermes"]["planned"], "pushes": per_policy["hermes"]["pushes"]},
            "suppressed_by_reason": dict(sorted(Counter(sup).items(), key=lambda kv: -kv[1])),
            "scenes": scenes, "policies": per_policy, "same_users": same, "inputs": _inputs(wh, ds)}


def lead_concentration(leads, top: int = 5) -> dict:
    """How many of Hermes' pushes each listing leads (names in the notification). leads: the first item of each
    push with a slot. A second-hand listing sells once: when one leads a large share of the night, its sale before
    the send turns that many feeds over to their next items or reserves at once, and that share of the night's
    expected opens rests on one listing's estimate. The report names the most-pushed listings so whoever reads the
    plan sees it; nothing here changes the plan."""
    import numpy as np

    leads = np.asarray(leads, dtype=np.int64)
    if not len(leads):
        return {"pushes": 0, "distinct_leads": 0, "top_share": 0.0, "top": [], "note": "no push leads a listing"}
    ids, counts = np.unique(leads, return_counts=True)
    order = np.lexsort((ids, -counts))[:top]
    best = [[int(ids[i]), int(counts[i])] for i in order]
    share = best[0][1] / len(leads)
    note = (f"{len(ids):,} listings lead the night's {len(leads):,} pushes; the most pushed, item {best[0][0]}, leads "
            f"{best[0][1]:,} ({share:.0%}), the top {len(best)} together {sum(c for _, c in best) / len(leads):.0%}")
    return {"pushes": int(len(leads)), "distinct_leads": int(len(ids)), "top_share": round(float(share), 4),
            "top": best, "note": note}


def feed_estimate(items, recalibration: dict | None) -> dict:
    """What the expected opens say of feeds of several items. items: the items of each Hermes push with a slot.

    A feed is estimated by its best item, recalibrated with c log(items) once Hermes' own pushes show what a longer
    feed adds (features.windows.Recalibration). Until then (a history of one-item pushes, a fresh deployment) c is 0
    and the estimate of a longer feed is its best item's alone: a floor, not a forecast, and the report says so."""
    import numpy as np

    items = np.asarray(items)
    c = float((recalibration or {}).get("c") or 0.0)
    multi = float((items > 1).mean()) if len(items) else 0.0
    floor = c == 0.0 and multi > 0
    if floor:
        note = (f"{multi:.0%} of Hermes' pushes show several items, but no push history yet shows what a longer feed "
                "adds to its best item (the recalibration's length term c is 0): those feeds are estimated by their "
                "best item alone, so the expected opens are a floor")
    elif multi:
        note = f"feeds are estimated by their best item plus c = {c:.3f} per log item, learnt from Hermes' own pushes"
    else:
        note = "every push shows one item: its estimate is the push's"
    return {"multi_item_share": round(multi, 4), "length_term": c, "expected_is_floor": floor, "note": note}


def scene_estimate(scenes: dict, history_scenes: dict | None, model_policy: str | None) -> dict:
    """Which planned scenes the model version's fit never saw. scenes: this report's per-scene rows (their pushes);
    history_scenes: {scene_id: training pushes} from the version's tag (None: a version registered before it).

    A trained regression scores a scene its history never held at the history's average scene level
    (training.model.centre_scene_effects): an estimate without that scene's own effect, which its first pushes
    (explored ones too) teach the next night's model. The prior policy gives no scene an effect of its own."""
    from training.prior import PRIOR
    from training.train import HISTORY_SCENES_MAX

    pushes = {s: int(v["pushes"]) for s, v in scenes.items() if v["pushes"]}
    total = sum(pushes.values())
    if model_policy == PRIOR:
        return {"unseen_scenes": None, "unseen_share": None,
                "note": "the prior policy gives no scene an effect of its own: every scene is estimated alike"}
    if history_scenes is None:
        return {"unseen_scenes": None, "unseen_share": None,
                "note": "the model version does not record the scenes its fit saw (registered before Hermes tagged them)"}
    unseen = sorted(s for s in pushes if s not in history_scenes)
    share = sum(pushes[s] for s in unseen) / total if total else 0.0
    of = f" (of its {HISTORY_SCENES_MAX} most pushed)" if len(history_scenes) >= HISTORY_SCENES_MAX else ""
    if unseen:
        note = (f"{share:.0%} of Hermes' pushes are of scenes the model's history never showed{of}: "
                f"{', '.join(unseen)}. They are estimated at the history's average scene level, without an effect "
                "of their own, which these pushes teach the next night's model")
    else:
        note = "every planned scene was in the model's history"
    return {"unseen_scenes": unseen, "unseen_share": round(share, 4), "note": note}


def _why(wh: Warehouse, ds: str) -> str | None:
    """The gate's reason for the night's model: why the prior or a trained model planned."""
    path = wh.report("training", ds, "gate")
    if not path.exists():
        return None
    g = json.loads(path.read_text())
    return f"version {g['candidate_version']} {g['decision']} -> @{g['alias']}: {g['reason']}"


def _inputs(wh: Warehouse, ds: str) -> dict:
    """Per raw table: rows in, kept and quarantined (per rule, with examples) and warnings, from raw validation."""
    from jobs.validate_raw import raw_reports

    return {t: {k: r.get(k) for k in ("rows_in", "rows_kept", "rows_quarantined", "quarantined_by_rule", "examples",
                                      "warnings")} for t, r in raw_reports(wh, ds).items()}


# ---- HTML ---------------------------------------------------------------------------------------------
def _load_chart(hermes: list[int], baseline: list[int], capacity: list[int]) -> str:
    """Grouped bars per UTC hour with the capacity as a dashed line; plain SVG."""
    w, hgt, left, bottom, top = 880, 300, 56, 34, 16
    busiest = max(max(hermes), max(baseline), 1)
    # a capacity far above the load would flatten the bars: then the axis follows the load, the line is noted
    cap_on_scale = max(capacity) <= 2 * busiest
    peak = max(busiest, max(capacity)) if cap_on_scale else busiest * 1.15
    scale = (hgt - bottom - top) / peak
    slots = len(hermes)
    step = (w - left - 10) / slots
    bar = step * 0.38
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{hgt}" role="img" '
           f'aria-label="pushes per UTC hour against capacity" font-family="sans-serif" font-size="11">']
    for k in range(5):
        v = peak * k / 4
        y = hgt - bottom - v * scale
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{w - 10}" y2="{y:.1f}" stroke="#e5e5e5"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{v:,.0f}</text>')
    for s in range(slots):
        x = left + s * step
        for j, (vals, color) in enumerate(((hermes, "#2b6cb0"), (baseline, "#dd8a2e"))):
            bh = vals[s] * scale
            when = f"{s % 24:02d}:00 UTC" + (" the next day" if s >= 24 else "")
            out.append(f'<rect x="{x + 2 + j * bar:.1f}" y="{hgt - bottom - bh:.1f}" width="{bar:.1f}" '
                       f'height="{bh:.1f}" fill="{color}"><title>{when}: {vals[s]:,}</title></rect>')
        out.append(f'<text x="{x + step / 2:.1f}" y="{hgt - bottom + 14}" text-anchor="middle" fill="#555">'
                   f'{s % 24:02d}</text>')
    if cap_on_scale:
        cap_y = [hgt - bottom - c * scale for c in capacity]
        pts = " ".join(f"{left + s * step:.1f},{cap_y[s]:.1f} {left + (s + 1) * step:.1f},{cap_y[s]:.1f}"
                       for s in range(slots))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#c53030" stroke-width="2" stroke-dasharray="6 4"/>')
        cap_note = "- - capacity"
    else:
        cap_note = f"capacity {max(capacity):,}/h is above this axis"
    out.append(f'<text x="{left}" y="{hgt - 4}" fill="#333">UTC hour of the send day, then 00–11 of the next · '
               '<tspan fill="#2b6cb0">■ Hermes</tspan> <tspan fill="#dd8a2e">■ baseline (Push 1.0)</tspan> '
               f'<tspan fill="#c53030">{cap_note}</tspan></text></svg>')
    return "".join(out)


def _table(headers: list[str], rows: list[list]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return "" if v is None else str(v)


def _recalibration(rc: dict | None) -> str:
    if not rc:
        return ""
    scene = rc.get("scene") or {}
    offsets = (" + d[scene] (" + ", ".join(f"{html.escape(str(k))} {v:+.2f}" for k, v in sorted(scene.items())) + ")"
               if scene else "")
    wanted = f" + {rc['interest']:.3f} [an item of the user's interest]" if rc.get("interest") else ""
    return (f"<p>expected opens recalibrated: logit p' = {rc['a']:.3f} + {rc['b']:.3f} logit p + {rc.get('c', 0.0):.3f} "
            f"log(items){offsets}{wanted} ({html.escape(str(rc.get('reason')))})</p>")


def render_html(r: dict) -> str:
    h, b, same = r["policies"]["hermes"], r["policies"]["baseline"], r["same_users"]
    ratio = f"{same['ratio']:.2f}×" if same["ratio"] else "n/a"
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Hermes plan {r['send_day']}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:960px}"
        "table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ddd;padding:4px 10px;"
        "text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
        ".kpi{display:inline-block;margin:0 24px 12px 0}.kpi b{display:block;font-size:22px}",
        "</style></head><body>",
        f"<h1>Hermes plan for {html.escape(r['send_day'])} <small>(planned by nightly ds={html.escape(r['ds'])}; "
        "written before the batches, whether or not the run delivers them)"
        "</small></h1>",
        f"<p>config <code>{html.escape(r['config_version'])}</code> · model version "
        f"<code>{html.escape(str(r['model_version']))}</code> · batches policy <b>{html.escape(str(r['active_policy']))}"
        f"</b> · timing elasticity {r['timing_elasticity']:.3f}</p>",
        f"<p>planned by the <b>{html.escape(str(r.get('model_policy')))}</b> policy "
        f"({html.escape(str(r.get('why_this_policy')))})</p>",
        _recalibration(r.get("recalibration")),
        f"<p>{html.escape(r['feed_estimate']['note'])}</p>" if r.get("feed_estimate") else "",
        f"<p>{html.escape(r['scene_estimate']['note'])}</p>" if r.get("scene_estimate") else "",
        f"<p>{html.escape(r['lead_listings']['note'])}</p>" if r.get("lead_listings") else "",
        f"<div class='kpi'>pushes (Hermes)<b>{h['pushes']:,}</b></div>"
        f"<div class='kpi'>expected opens<b>{h['expected_opens']:,.0f}</b></div>"
        f"<div class='kpi'>expected open rate<b>{100 * h['expected_open_rate']:.2f}%</b></div>"
        f"<div class='kpi'>vs baseline, same users<b>{ratio}</b></div>"
        f"<div class='kpi'>peak hour / capacity<b>{h['peak_load']:,} / {h['capacity'][0]:,}</b></div>",
        "<h2>Hourly load against capacity</h2>", _load_chart(h["load"], b["load"], h["capacity"]),
        "<h2>Hermes vs baseline</h2>",
        _table(["", "Hermes", "baseline (Push 1.0)"], [
            ["planned users", h["planned"], b["planned"]], ["pushes with a slot", h["pushes"], b["pushes"]],
            ["expected opens", h["expected_opens"], b["expected_opens"]],
            ["expected open rate", h["expected_open_rate"], b["expected_open_rate"]],
            ["scenes used", h["scenes"], b["scenes"]], ["peak hourly load", h["peak_load"], b["peak_load"]],
            ["explored hours", h["explored"], b["explored"]],
            ["feeds with an item of the user's interest", f"{100 * h.get('interest_share', 0.0):.1f}%",
             f"{100 * b.get('interest_share', 0.0):.1f}%"],
            ["not sent (reason: count)", ", ".join(f"{k}: {v}" for k, v in h["not_sent"].items()) or "none",
             ", ".join(f"{k}: {v}" for k, v in b["not_sent"].items()) or "none"],
            [f"same {same['users']:,} users: expected opens", same["hermes_expected_opens"],
             same["baseline_expected_opens"]],
        ]),
        "<p>Send-window optimiser: expected opens lost to capacity and exploration vs each user's best hour: "
        f"{100 * (h['loss_vs_unconstrained'] or 0):.2f}%; at most {100 * (h['gap_to_upper_bound'] or 0):.3f}% "
        "below the optimum under capacity (LP dual bound).</p>",
        "<h2>Volume and expected open rate per scene (Hermes)</h2>",
        _table(["scene", "pushes", "expected opens", "expected open rate", "items per feed"],
               [[s, v["pushes"], v["expected_opens"], v["expected_open_rate"], v.get("items_per_feed", "")] for s, v in
                sorted(r["scenes"].items(), key=lambda kv: -kv[1]["pushes"])]),
        "<h2>Inputs: rows quarantined by raw validation</h2>",
        _table(["raw table", "rows in", "kept", "quarantined"],
               [[t, v["rows_in"], v["rows_kept"], v["rows_quarantined"]] for t, v in r.get("inputs", {}).items()]),
        _table(["raw table", "rule", "rows", "examples"],
               [[t, rule, n, ", ".join(v["examples"].get(rule, []))] for t, v in r.get("inputs", {}).items()
                for rule, n in (v["quarantined_by_rule"] or {}).items()] or [["none", "", "", ""]]),
        "".join(f"<p><b>warning</b> {html.escape(w)}</p>" for v in r.get("inputs", {}).values()
                for w in v.get("warnings") or []),
        "<h2>Funnel and suppression</h2>",
        _table(["step", "count"], [[k.replace("_", " "), v] for k, v in r["funnel"].items()]),
        _table(["suppressed because", "pairs"], [[k, v] for k, v in r["suppressed_by_reason"].items()]),
        "</body></html>",
    ]
    return "".join(parts)


def run(settings: Settings, ds: str, loaded, log_to_mlflow: bool = True) -> dict:
    import mlflow

    from training.registry import configure_mlflow

    wh = Warehouse(settings.warehouse)
    report = build(wh, ds, loaded)
    folder = wh.report("plan", ds, "plan").parent
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps(report, indent=2))
    (folder / "plan.html").write_text(render_html(report))
    run_id = None
    if log_to_mlflow:
        configure_mlflow(settings.mlflow_tracking_uri, settings.home / "mlflow" / "artifacts", EXPERIMENT)
        h, b = report["policies"]["hermes"], report["policies"]["baseline"]
        with mlflow.start_run(run_name=f"plan-{ds}") as r:
            mlflow.set_tags({"ds": ds, "send_day": report["send_day"], "config_version": loaded.version,
                             "model_version": str(report["model_version"])})
            mlflow.log_metrics({"hermes_pushes": h["pushes"], "hermes_expected_opens": h["expected_opens"],
                                "baseline_pushes": b["pushes"], "baseline_expected_opens": b["expected_opens"],
                                "hermes_peak_load": h["peak_load"], "baseline_peak_load": b["peak_load"],
                                "window_loss_vs_unconstrained": h["loss_vs_unconstrained"] or 0.0,
                                "same_users_ratio": report["same_users"]["ratio"] or 0.0,
                                "distinct_lead_listings": report["lead_listings"]["distinct_leads"],
                                "top_lead_listing_share": report["lead_listings"]["top_share"]})
            mlflow.log_artifact(str(folder / "plan.html"))
            mlflow.log_artifact(str(folder / "plan.json"))
            run_id = r.info.run_id
    log.info("plan report for %s: %s (mlflow run %s)", report["send_day"], folder / "plan.html", run_id)
    return {"ds": ds, "html": str(folder / "plan.html"), "json": str(folder / "plan.json"), "mlflow_run": run_id,
            "pushes": report["policies"]["hermes"]["pushes"], "same_users": report["same_users"]}

