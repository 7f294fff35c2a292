"""Recognise the kind of an input and the route that handles it.

In-memory inputs are run by ``postfit._runner``. Lazy Dask collections, Ray
Datasets and postfit file sources each have a route in their own module,
imported only when such an input arrives, so that the optional engines are
not imported with postfit.
"""

from __future__ import annotations

import sys

__all__ = ["is_dask_collection", "is_ray_dataset", "materialize", "route_input"]


def is_dask_collection(obj) -> bool:
    """Return True for a Dask collection, without importing Dask when it is not loaded."""
    if "dask" not in sys.modules:
        return False
    from dask import is_dask_collection as check

    return check(obj)


def is_ray_dataset(obj) -> bool:
    """Return True for a ``ray.data.Dataset``, without importing Ray when it is not loaded."""
    if "ray.data" not in sys.modules:
        return False
    import ray.data

    return isinstance(obj, ray.data.Dataset)


def is_source(obj) -> bool:
    """Return True for a postfit file source (``postfit.read_parquet`` and friends)."""
    if "postfit.io" not in sys.modules:
        return False
    from .io import Source

    return isinstance(obj, Source)


def route_input(X, execute=None, output=None, **options):
    """Return the function that runs a method on X, or None for the in-memory route.

    The returned function takes ``(wrapper, estimator, method, X, options,
    kwargs)``.
    """
    from functools import partial

    if is_dask_collection(X):
        from ._dask import run_dask

        return partial(run_dask, execute=execute, output=output, **options)
    if is_ray_dataset(X):
        from .backends.ray import run_ray_dataset

        return partial(run_ray_dataset, execute=execute, output=output, **options)
    if is_source(X) or output is not None:
        from .io import run_source

        return partial(run_source, execute=execute, output=output, **options)
    if execute is False:
        from ._dask import run_lazy_in_memory

        return partial(run_lazy_in_memory, **options)
    return None


def materialize(obj):
    """Return obj in memory: Dask collections are computed, file sources read."""
    if obj is None:
        return None
    if is_dask_collection(obj):
        return obj.compute()
    if is_ray_dataset(obj):
        return obj.to_pandas()
    if is_source(obj):
        return obj.read()
    return obj
