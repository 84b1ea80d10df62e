"""loupe-dl-anomaly: registers the anomaly inspect tool and the anomaly model runtime (no torch)."""
from host import hookimpl


@hookimpl
def loupe_inspect(register):
    from .runtime import PatchCoreTool

    register(PatchCoreTool)


@hookimpl
def loupe_model_runtime(register):
    from .runtime import AnomalyRuntime

    register(AnomalyRuntime)
