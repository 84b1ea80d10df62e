"""loupe-trainer: hook implementations (filled in by the anomaly and classification issues)."""
from host import hookimpl


@hookimpl
def loupe_train(register):
    from .classify.trainer import ClassifyTrainer

    register(ClassifyTrainer)
    from .anomaly.trainer import AnomalyTrainer

    register(AnomalyTrainer)
    from .segment.trainer import SegmentTrainer

    register(SegmentTrainer)

    from .detect.trainer import DetectTrainer

    register(DetectTrainer)


@hookimpl
def loupe_commands(register):
    from .dataset import DatasetCommand

    register(DatasetCommand)


@hookimpl
def loupe_optimize(register):
    from .optimize import FP16Optimizer, Int8Optimizer, PruneOptimizer

    register(Int8Optimizer)
    register(FP16Optimizer)
    register(PruneOptimizer)
