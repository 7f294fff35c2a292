"""postfit: score data far larger than a model was trained on.

Wrap any fitted scikit-learn estimator in :class:`ParallelPostFit` and its
post-fit methods run block by block, in parallel, out of core from files, and
on Dask or Ray clusters.
"""

from ._models import load_model, save_model
from .incremental import Incremental
from .io import read_csv, read_npy, read_parquet, read_zarr
from .wrappers import ParallelPostFit

__version__ = "0.1.0"

__all__ = [
    "Incremental",
    "ParallelPostFit",
    "__version__",
    "load_model",
    "read_csv",
    "read_npy",
    "read_parquet",
    "read_zarr",
    "save_model",
]
