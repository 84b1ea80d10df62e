"""Hook implementations of loupe-ray (imports of Ray and pyarrow stay inside the classes' methods)."""
from host import hookimpl

from .executor import RayExecutor
from .parquet import ParquetReporter
from .sources import ArchiveSource, ManifestSource


@hookimpl
def loupe_acquire(register):
    register(ManifestSource)
    register(ArchiveSource)


@hookimpl
def loupe_report(register):
    register(ParquetReporter)


@hookimpl
def loupe_executor(register):
    register(RayExecutor)
