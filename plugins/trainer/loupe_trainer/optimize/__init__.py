"""Bundle optimisation for inference: ``int8`` (static quantisation), ``fp16``, ``prune`` (structured pruning).

Each optimiser reads a bundle written by the Loupe trainers and writes a new
bundle that the same runtimes open unchanged; ``bundle.json`` gets an
``optimization`` record (method, settings, excluded nodes, parent sha256,
parity against the parent and the accuracy of both on held-out data).
"""
from .fp16 import FP16Optimizer
from .int8 import Int8Optimizer
from .prune import PruneOptimizer

__all__ = ["FP16Optimizer", "Int8Optimizer", "PruneOptimizer"]
