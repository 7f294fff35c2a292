"""Backends: what runs the per-block kernel.

Each backend is a subclass of :class:`Backend` registered under a name.
Optional engines (Dask, Ray) are registered by import path and imported only
when a run requests them, so that postfit imports without them installed.
"""

from __future__ import annotations

import importlib

from ._base import Backend, check_n_jobs, cpu_cores, effective_n_workers

__all__ = [
    "Backend",
    "available_backends",
    "check_n_jobs",
    "cpu_cores",
    "effective_n_workers",
    "get_backend",
    "register_backend",
]

_REGISTRY: dict[str, type[Backend] | str] = {
    "sequential": "postfit.backends.sequential:SequentialBackend",
    "threading": "postfit.backends.threading:ThreadingBackend",
    "loky": "postfit.backends.loky:LokyBackend",
    "dask": "postfit.backends.dask:DaskBackend",
    "ray": "postfit.backends.ray:RayBackend",
}

# The extra to install for each optional engine, named in the error raised
# when the engine's package is missing.
_EXTRAS = {"dask": "dask", "ray": "ray"}


def register_backend(name: str, backend_class: type[Backend]) -> None:
    """Register ``backend_class`` under ``name`` so that ``backend=name`` selects it."""
    if not (isinstance(backend_class, type) and issubclass(backend_class, Backend)):
        raise TypeError(
            f"backend_class must be a subclass of postfit.backends.Backend, got {backend_class!r}."
        )
    _REGISTRY[name] = backend_class


def available_backends() -> list[str]:
    """Return the registered backend names, optional engines included."""
    return sorted(_REGISTRY)


def get_backend(name: str) -> type[Backend]:
    """Return the backend class registered as ``name``, importing it on first use."""
    if name not in _REGISTRY:
        choices = ", ".join(repr(n) for n in ["auto", *available_backends()])
        raise ValueError(f"Unknown backend {name!r}. Choose one of {choices}.")
    entry = _REGISTRY[name]
    if isinstance(entry, str):
        module_name, class_name = entry.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            extra = _EXTRAS.get(name)
            if extra is None:
                raise
            raise ImportError(
                f"The {name!r} backend needs the optional {name} packages, which are not "
                f"installed ({exc}). Install them with: pip install 'postfit[{extra}]'"
            ) from exc
        entry = getattr(module, class_name)
        _REGISTRY[name] = entry
    return entry
