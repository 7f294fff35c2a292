"""Files in, files out: lazy file sources and file outputs for post-fit methods.

A source (:func:`read_parquet`, :func:`read_csv`, :func:`read_npy`,
:func:`read_zarr`) lists its files and reads nothing else until a method
runs; each block is then read by the worker that scores it. Any post-fit
method of :class:`postfit.ParallelPostFit` takes a source, and with
``output=`` writes its result as one part file per block, which a rerun with
``resume=True`` continues from.
"""

from ._arrays import NpySource, ZarrSource, read_npy, read_zarr
from ._csv import CsvSource, read_csv
from ._parquet import ParquetSource, read_parquet
from ._run import run_source
from ._sinks import OutputLockedError, OutputNames, WriteResult, output_names
from ._source import ArraySchema, InputError, InvalidFileError, Source

__all__ = [
    "ArraySchema",
    "CsvSource",
    "InputError",
    "InvalidFileError",
    "NpySource",
    "OutputLockedError",
    "OutputNames",
    "ParquetSource",
    "Source",
    "WriteResult",
    "ZarrSource",
    "output_names",
    "read_csv",
    "read_npy",
    "read_parquet",
    "read_zarr",
    "run_source",
]
