"""The closed loop's set-up: the evaluation's spec, the world both arms share, and each arm's own
warehouse, registry, ledger and bucket."""
from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from core.settings import Settings
from core.warehouse import Warehouse

log = logging.getLogger(__name__)

EXPERIMENT = "hermes-evaluation"
ARMS = ("baseline", "hermes")
REALTIME = "hermes_rt"                # the third arm (EvalSpec.realtime): Hermes' plan + the streaming trigger engine
ALL_ARMS = (*ARMS, REALTIME)
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
SCENE_COVERAGE_SHARE = 0.01     # a scene "reaches users" when it carries >= 1 % of an arm's sends
INACTIVE_PROFILE = 0.5 / 24     # a local hour is inactive for a user when P(active there) < half the uniform share


@dataclass(frozen=True)
class EvalSpec:
    users: int = 4000
    days: int = 3
    seed: int = 7
    history_days: int = 28
    holdout_share: float = 0.10
    rate_per_second: float = 5000.0     # delivery speed: throttling is tested elsewhere, not the subject here
    bootstrap: int = 1000
    variant: str = "base"               # the kind of world (lab/simulator/variants.py)
    cold_start: bool = False            # the history days carry organic events only: an empty push_log
    realtime: bool = False              # a third arm: Hermes + the streaming trigger engine over each day's events

    @property
    def arms(self) -> tuple[str, ...]:
        return ALL_ARMS if self.realtime else ARMS


@dataclass
class Arm:
    name: str
    settings: Settings
    loaded: object

    @property
    def wh(self) -> Warehouse:
        return Warehouse(self.settings.warehouse)


def eval_config(loaded, spec: EvalSpec):
    """The configuration both arms run under: conf/ as it is, with the evaluation's holdout share and delivery
    rate (the version says so)."""
    from core.config.loader import LoadedConfig

    p = loaded.config.platform
    gw = p.gateway.model_copy(update={"rate_per_second": spec.rate_per_second,
                                      "burst": int(max(p.gateway.burst, spec.rate_per_second))})
    platform = p.model_copy(update={"gateway": gw, "holdout_share": spec.holdout_share})
    config = loaded.config.model_copy(update={"platform": platform})
    return LoadedConfig(config=config, version=f"{loaded.version}-eval", files=loaded.files)


def world_spec(spec: EvalSpec):
    from lab.simulator.market import WorldSpec

    return WorldSpec(users=spec.users, items=2 * spec.users, days=spec.history_days + spec.days, seed=spec.seed,
                     variant=spec.variant)


def send_days_of(spec: EvalSpec) -> list[str]:
    """The closed-loop days: the world's days after the Push 1.0 history."""
    ws = world_spec(spec)
    return [(ws.start + timedelta(days=spec.history_days + i)).isoformat() for i in range(spec.days)]


def arm_settings(base: Settings, out: Path, name: str) -> Settings:
    """An arm's own warehouse, MLflow registry, ledger and bucket under out/<name>."""
    home = out / name
    return replace(base, home=home, warehouse=home / "warehouse",
                   mlflow_tracking_uri=f"sqlite:///{home}/mlflow/mlflow.db",
                   ledger_url=f"sqlite:///{home}/state/delivery_ledger.sqlite",
                   s3_bucket=f"{base.s3_bucket}-eval-{name.replace('_', '-')}", receipt_time="planned")


def prepare(base: Settings, spec: EvalSpec, out: Path) -> tuple[dict[str, Arm], list[str]]:
    """Simulate the world once and give each arm its own copy (hard links) of it. Returns arms and send days."""
    from core.config.loader import load_config
    from lab.simulator.market import simulate

    ws = world_spec(spec)
    world = out / "world"
    shutil.rmtree(out, ignore_errors=True)
    counts = simulate(ws, world, push_days=0 if spec.cold_start else spec.history_days)
    log.info("world: %s", counts)
    loaded = eval_config(load_config(base.conf_dir), spec)
    arms = {}
    for name in spec.arms:
        settings = arm_settings(base, out, name)
        settings.warehouse.mkdir(parents=True)
        subprocess.run(["cp", "-al", str(world / "raw"), str(settings.warehouse / "raw")], check=True)
        (settings.home / "mlflow").mkdir()
        (settings.home / "state").mkdir()
        arms[name] = Arm(name, settings, for_arm(loaded, name))
    return arms, send_days_of(spec)


def for_arm(loaded, name: str):
    """The arm's configuration: `windows.policy` names whose plan its batches hold, as in a deployment that runs
    that policy (the next night's capacity and fatigue count that plan's late hours, not the other's)."""
    from core.config.loader import LoadedConfig

    p = loaded.config.platform
    platform = p.model_copy(update={"windows": p.windows.model_copy(update={"policy": policy_of(name)})})
    return LoadedConfig(config=loaded.config.model_copy(update={"platform": platform}), version=loaded.version,
                        files=loaded.files)




def policy_of(arm: str) -> str:
    """Whose nightly plan the arm sends: the real-time arm sends Hermes' plan (and its triggers on top)."""
    return "hermes" if arm == REALTIME else arm
