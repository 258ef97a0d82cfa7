"""`hermes simulate`: write a simulated marketplace in the raw contract under the warehouse.

Deterministic for a seed; also saves the ground truth under raw/_ground_truth.
"""
from __future__ import annotations

import argparse
import logging
from datetime import date

from core.settings import Settings
from lab.simulator.market import WorldSpec, simulate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=10_000, help="simulated users (items: twice as many)")
    p.add_argument("--items", type=int, default=None, help="default: 2 x users")
    p.add_argument("--days", type=int, default=30, help="simulated days of events")
    p.add_argument("--seed", type=int, default=7, help="random seed (a different seed is a different world)")
    p.add_argument("--start", type=date.fromisoformat, default=date(2026, 10, 1), help="first simulated UTC day")
    p.add_argument("--variant", default="base", help="the kind of marketplace (lab/simulator/variants.py): base, "
                   "global_dst, night_owls, price_blind, holdout_mix, or random (every knob drawn from the seed)")
    p.add_argument("--push-days", type=int, default=None, help="days of Push 1.0 history from the first day "
                   "(default: all; 0: a fresh deployment with an empty push_log)")


def run(args: argparse.Namespace, settings: Settings) -> dict:
    from lab.simulator.variants import variant

    try:
        variant(args.variant, args.seed)        # an unknown name fails here, before anything is written
    except ValueError as e:
        raise SystemExit(f"simulate: {e}") from None
    spec = WorldSpec(users=args.users, items=args.items or 2 * args.users, days=args.days, seed=args.seed,
                     start=args.start, variant=args.variant)
    counts = simulate(spec, settings.warehouse, push_days=args.push_days)
    print(f"simulated {spec.users} users, {spec.items} items, {spec.days} days "
          f"({spec.start} .. {spec.last_ds}) seed={spec.seed} variant={spec.variant} in {counts['seconds']} s -> "
          f"{settings.warehouse}/raw")
    for table in ("users", "items", "item_changes", "events", "push_log"):
        print(f"  raw/{table:<13} {counts[table]:>12,} rows")
    return counts


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m lab.simulate", description=__doc__)
    add_arguments(p)
    run(p.parse_args(argv), Settings.from_env())


if __name__ == "__main__":
    main()
