"""The evaluation's report: Markdown, plots, one MLflow run (experiment `hermes-evaluation`), report.json."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from core.settings import Settings
from lab.evaluation.arms import EXPERIMENT, REALTIME, SCENE_COVERAGE_SHARE, Arm, EvalSpec, arm_settings, eval_config, send_days_of
from lab.evaluation.metrics import compare, hermes_plan_scenes

log = logging.getLogger(__name__)
LABELS = {"baseline": "Push 1.0", "hermes": "Hermes", REALTIME: "Hermes + real-time"}


def _fmt(v, pct=False):
    if v is None:
        return "-"
    return f"{100 * v:.2f} %" if pct else f"{v:.3f}"


def title(spec: EvalSpec) -> str:
    """The report's first line: the world, and the history the loop started from (none, for a cold start)."""
    history = (f"{spec.history_days} days of organic events and no push history: a cold start" if spec.cold_start
               else f"{spec.history_days} days of Push 1.0 history")
    return (f"# Hermes vs Push 1.0 — seed {spec.seed}, {spec.users:,} users, {spec.days} days closed loop "
            f"({history}), holdout {spec.holdout_share:.0%}")


def markdown(result: dict, spec: EvalSpec, seconds: float) -> str:
    t = result["table"]
    pct = {"open_rate", "user_coverage", "disturbance_share", "activation", "activation_holdout",
           "incremental_activation"}
    # a ratio of two small differences means nothing: those rows show Hermes - Push 1.0 instead
    as_diff = {"activation_holdout", "incremental_activation"}
    lines = [title(spec), "",
             "| metric | Push 1.0 | Hermes | Hermes / Push 1.0 (95 % CI) |", "|---|---|---|---|"]
    for m, row in t.items():
        if m == "scene_coverage":
            lines.append(f"| scene coverage (scenes with >= 1 % of sends) | {row['baseline']} | {row['hermes']} | "
                         f"{row['ratio']:.2f}x |" if row["ratio"] else f"| scene coverage | {row['baseline']} | "
                         f"{row['hermes']} | - |")
            continue
        p = m in pct
        ci = row.get("ratio_ci")
        ratio = f"{row['ratio']:.2f}x ({ci[0]:.2f}–{ci[1]:.2f})" if row.get("ratio") is not None and ci else "-"
        if m in as_diff:
            d, dci = row["diff"], row["diff_ci"]
            ratio = f"{100 * d:+.2f} pp ({100 * dci[0]:+.2f}–{100 * dci[1]:+.2f}), difference"
        lines.append(f"| {m.replace('_', ' ')} | {_fmt(row['baseline'], p)} ({_fmt(row['baseline_ci'][0], p)}–"
                     f"{_fmt(row['baseline_ci'][1], p)}) | {_fmt(row['hermes'], p)} ({_fmt(row['hermes_ci'][0], p)}–"
                     f"{_fmt(row['hermes_ci'][1], p)}) | {ratio} |")
    o = result["off_policy"]
    lines += ["", f"Off-policy from Push 1.0's log: {o['logged_pushes']:,} logged pushes, {o['matching_pushes']:,} where "
              f"Hermes chose the same scene, SNIPS open rate {_fmt(o['snips_open_rate'], True)} (ESS "
              f"{o['effective_sample_size']:.0f}) vs closed-loop Hermes {_fmt(o['closed_loop_hermes_open_rate'], True)} "
              f"and Push 1.0 logged {_fmt(o['baseline_logged_open_rate'], True)}.",
              *_withdrawn(result.get("days", {})),
              *_judged_nights(result.get("days", {}).get("hermes", [])),
              *_realtime(result),
              "", f"Scene mix: Push 1.0 {result['arms']['baseline']['scene_mix']}; Hermes "
              f"{result['arms']['hermes']['scene_mix']}", "", f"Run time: {seconds / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _realtime(result: dict) -> list[str]:
    """The third arm: Hermes + real-time against Hermes nightly, and its triggered pushes alone."""
    if REALTIME not in result["arms"]:
        return []
    t = result["table"]
    pct = {"open_rate", "user_coverage", "disturbance_share", "activation", "activation_holdout",
           "incremental_activation"}
    lines = ["", "## Hermes + real-time (the streaming trigger engine on top of Hermes' plan)", "",
             "| metric | Hermes nightly | Hermes + real-time | + real-time − nightly (95 % CI) | ratio (95 % CI) |",
             "|---|---|---|---|---|"]
    for m in ("open_rate", "opens_per_user_day", "sends_per_user_day", "user_coverage", "activation",
              "incremental_activation", "disturbance_share"):
        row, p = t[m], m in pct
        d, dci, ci = row["rt_minus_hermes"], row["rt_minus_hermes_ci"], row.get("rt_vs_hermes_ci")
        scale, unit = (100, " pp") if p else (1, "")
        ratio = f"{row['rt_vs_hermes']:.3f}x ({ci[0]:.3f}–{ci[1]:.3f})" if row.get("rt_vs_hermes") and ci else "-"
        lines.append(f"| {m.replace('_', ' ')} | {_fmt(row['hermes'], p)} | {_fmt(row[REALTIME], p)} | "
                     f"{scale * d:+.4f}{unit} ({scale * dci[0]:+.4f}–{scale * dci[1]:+.4f}) | {ratio} |")
    tr = result["arms"][REALTIME]["triggered"]
    if tr["pushes"]:
        lines += ["", f"Triggered pushes: {tr['pushes']:,}, open rate {_fmt(tr['open_rate'], True)} = "
                  f"{tr['vs_push1']:.2f}x Push 1.0's and {tr['vs_hermes_nightly']:.2f}x Hermes nightly's; by rule "
                  + ", ".join(f"{k} {v['pushes']} at {_fmt(v['open_rate'], True)}" for k, v in tr["by_rule"].items())]
    else:
        lines += ["", "Triggered pushes: none were sent."]
    return lines


def _withdrawn(days: dict) -> list[str]:
    """Planned nightly pushes not sent because every item sold or was removed before their hour."""
    parts, reserves = [], []
    for arm in ("baseline", "hermes"):
        rows = [d for d in days.get(arm, []) if d.get("planned") is not None]
        planned = sum(d["planned"] for d in rows)
        gone = sum(d.get("withdrawn_items_gone", 0) for d in rows)
        if planned:
            parts.append(f"{LABELS[arm]} {gone:,} of {planned:,} ({100 * gone / planned:.1f} %)")
            reserves.append(f"{LABELS[arm]} {sum(d.get('reserve_items_sent', 0) for d in rows):,}")
    return ["", "Planned pushes withdrawn at the send because every item (and every reserve) had sold or been removed: "
            + "; ".join(parts) + ". Sold items replaced by their feed's reserves: " + "; ".join(reserves) + "."
            ] if parts else []


def _judged_nights(days: list[dict]) -> list[str]:
    """Per night: which policy planned, the realised open rate, and the plan judged under the truth."""
    rows = [d for d in days if d.get("judge")]
    if not rows:
        return []
    out = ["", "| night (send day) | planned by | Hermes open rate (realised) | judged: plan / Push 1.0 / oracle | "
               "share of oracle lift (of the visible oracle's) | timing ratio | "
               "expected / true opens (/ their lead items' truth) | expected / opens as delivered |",
               "|---|---|---|---|---|---|---|---|"]
    for d in rows:
        j = d["judge"]
        o = j["open_rate"]
        out.append(f"| {d['send_day']} | {j.get('model_policy')} | {100 * d['opened'] / max(d['sent'], 1):.2f} % | "
                   f"{100 * o['plan']:.2f} / {100 * o['push_1_0']:.2f} / {100 * o['oracle']:.2f} % | "
                   f"{100 * j['oracle_lift_share']:.0f} %{_visible(j)} | {j['timing']['activity_ratio_chosen_vs_best']:.2f} | "
                   f"{j['calibration']['expected_over_true']:.2f}{_lead(j['calibration'])} | "
                   f"{_ratio(j['calibration'].get('expected_over_true_as_delivered'))} |")
    from lab.evaluation.judge import OWN_PLAN

    own = [d["send_day"] for d in rows if d["judge"].get("push_1_0_from", OWN_PLAN) == OWN_PLAN]
    out += ["", "Judged Push 1.0: the plan the Push 1.0 arm sends, under its own push history"
            + (f", except on {', '.join(own)}: Push 1.0's policy re-planned on Hermes' history (from the second night "
               "it picks its global scene from Hermes' logged opens: not the Push 1.0 the other arm sends)."
               if own else ".")]
    return out


def _visible(judge: dict) -> str:
    """' (x %)': the share of the lift of the oracle that knows item quality only as behaviour shows it."""
    v = judge.get("visible_oracle_lift_share")
    return f" ({100 * v:.0f} %)" if v is not None else ""


def _ratio(v) -> str:
    return f"{v:.2f}" if v is not None else "-"


def _lead(calibration: dict) -> str:
    """' (x)': the expected opens over the truth of the pushes' lead items alone, what a feed's estimate estimates."""
    v = calibration.get("expected_over_lead_item_truth")
    return f" ({v:.2f})" if v is not None else ""


def plots(result: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in result["daily"].items():
        ax.plot([r["send_day"] for r in rows], [r["opens"] / max(r["sends"], 1) for r in rows], marker="o",
                label=LABELS.get(name, name))
    ax.set_ylabel("push open rate"), ax.set_title("Daily open rate per policy (closed loop)"), ax.legend()
    fig.autofmt_xdate()
    out.append(folder / "daily_open_rate.png")
    fig.savefig(out[-1], dpi=100, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(7, 4))
    hours = np.arange(24)
    w = 0.8 / len(result["hourly_load"])
    for k, (name, load) in enumerate(result["hourly_load"].items()):
        ax.bar(hours + (k - (len(result["hourly_load"]) - 1) / 2) * w, load, width=w, label=LABELS.get(name, name))
    ax.set_xlabel("UTC hour"), ax.set_ylabel("pushes over all days"), ax.set_title("Load per hour"), ax.legend()
    out.append(folder / "hourly_load.png")
    fig.savefig(out[-1], dpi=100, bbox_inches="tight")
    fig, ax = plt.subplots(figsize=(7, 4))
    scenes = sorted(set().union(*(a["scene_mix"] for a in result["arms"].values())))
    y = np.arange(len(scenes))
    w = 0.8 / len(result["arms"])
    for k, name in enumerate(result["arms"]):
        mix = result["arms"][name]["scene_mix"]
        ax.barh(y + (k - (len(result["arms"]) - 1) / 2) * w, [mix.get(s, 0) for s in scenes], height=w,
                label=LABELS.get(name, name))
    ax.set_yticks(y, scenes), ax.set_xlabel("share of sends"), ax.set_title("Scene mix"), ax.legend()
    ax.axvline(SCENE_COVERAGE_SHARE, color="grey", linestyle=":")
    out.append(folder / "scene_mix.png")
    fig.savefig(out[-1], dpi=100, bbox_inches="tight")
    plt.close("all")
    return out


def log_mlflow(base: Settings, spec: EvalSpec, result: dict, files: list[Path], seconds: float) -> str:
    import mlflow

    from training.registry import configure_mlflow

    configure_mlflow(base.mlflow_tracking_uri, base.home / "mlflow" / "artifacts", EXPERIMENT)
    with mlflow.start_run(run_name=f"push1-vs-hermes-seed{spec.seed}") as run:
        mlflow.log_params({"users": spec.users, "days": spec.days, "seed": spec.seed,
                           "history_days": spec.history_days, "holdout_share": spec.holdout_share})
        for m, row in result["table"].items():
            for name in result["arms"]:
                if name in row:
                    mlflow.log_metric(f"{name}.{m}", float(row[name]))
            if row.get("rt_vs_hermes") is not None:
                mlflow.log_metric(f"rt_vs_hermes.{m}", float(row["rt_vs_hermes"]))
            if row.get("ratio") is not None:
                mlflow.log_metric(f"ratio.{m}", float(row["ratio"]))
            if row.get("diff") is not None:
                mlflow.log_metric(f"diff.{m}", float(row["diff"]))
        for k, v in result["off_policy"].items():
            if isinstance(v, (int, float)) and v is not None:
                mlflow.log_metric(f"off_policy.{k}", float(v))
        for name, rows in result["daily"].items():
            for step, r in enumerate(rows):
                mlflow.log_metric(f"{name}.daily_open_rate", r["opens"] / max(r["sends"], 1), step=step)
        mlflow.log_metric("seconds", seconds)
        for f in files:
            mlflow.log_artifact(str(f))
        return run.info.run_id


def report(base: Settings, spec: EvalSpec, out: Path, days: dict | None = None, seconds: float | None = None) -> dict:
    """Compare the two arms already lived under `out`, write report.json / report.md / plots, log one MLflow
    run. Also `hermes evaluate --report-only` (re-reports an evaluation without living it again)."""
    from core.config.loader import load_config

    loaded = eval_config(load_config(base.conf_dir), spec)
    arms = {name: Arm(name, arm_settings(base, out, name), loaded) for name in spec.arms}
    send_days = send_days_of(spec)
    if days is None or seconds is None:
        old = json.loads((out / "report.json").read_text())
        days, seconds = old["days"], old["seconds"]
    result = compare(arms, send_days, spec, hermes_plan_scenes(arms["hermes"], send_days))
    result["days"] = days
    result["seconds"] = round(seconds, 1)
    result["spec"] = spec.__dict__
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    md = markdown(result, spec, seconds)
    (out / "report.md").write_text(md)
    files = [out / "report.json", out / "report.md", *plots(result, out)]
    result["mlflow_run_id"] = log_mlflow(base, spec, result, files, seconds)
    log.info("evaluation written to %s (MLflow run %s)", out, result["mlflow_run_id"])
    print(md)
    return result


