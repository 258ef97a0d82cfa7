"""The closed-loop evaluation of Push 1.0 against Hermes on a simulated world (see `loop` for the whole story).

`arms` sets the world and the arms up, `loop` lives the days, `outcomes` draws what users do with the pushes,
`metrics` compares the arms, `report` writes it down.
"""
from lab.evaluation.arms import ARMS, EvalSpec
from lab.evaluation.loop import run
from lab.evaluation.report import report

__all__ = ["ARMS", "EvalSpec", "report", "run"]
