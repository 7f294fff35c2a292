"""The per-block kernel that every backend runs, and the per-process model cache.

``run_block`` is a module-level function so that process and cluster backends
can pickle a reference to it. It never receives the model itself on those
backends. Process pools and Ray pass a small :class:`ModelRef`, and Dask a
pickled copy (``pickle_model``). Either is loaded once per worker process and
kept for the next blocks.
"""

from __future__ import annotations

import collections
import contextlib
import pickle
import secrets
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import cloudpickle
import numpy as np
import scipy.sparse as sp
import xxhash

from ._blocks import EmptyOutput, describe_returned, is_multi_part, n_rows, output_rows
from .exceptions import BlockError

__all__ = [
    "Block",
    "ModelRef",
    "check_output_rows",
    "pickle_model",
    "resolve_model",
    "run_block",
]

_CACHE_LOCK = threading.Lock()
#: Models loaded from :class:`ModelRef` files, by token. One is kept per
#: process, so that long-lived workers do not accumulate models.
_MODEL_CACHE: collections.OrderedDict[str, Any] = collections.OrderedDict()
_CONTROLLER = None


@dataclass(frozen=True)
class ModelRef:
    """A pickled model stored in a file that each worker process loads once.

    ``token`` is a hash of the pickled bytes, so a worker that already holds
    the same model (from an earlier block or an earlier run) does not load it
    again.
    """

    path: str
    token: str

    def load(self):
        with open(self.path, "rb") as f:
            return pickle.load(f)


#: First item of the tuple that carries a pickled model to cluster workers.
PICKLED_MODEL_MARK = "postfit-pickled-model"
#: Models unpickled from such tuples that a worker process keeps, newest last.
PICKLED_MODELS_KEPT = 2
_PICKLED_CACHE: collections.OrderedDict[str, Any] = collections.OrderedDict()


def pickle_model(estimator, token=None) -> tuple:
    """Return ``estimator`` pickled, as a tuple that a worker unpickles once per process.

    A tuple of a string and bytes needs no import to arrive, so a worker
    receives it at once. Scattering the estimator instead made each fresh
    worker import scikit-learn (about 1.2 s here) in the event loop that
    receives data, which held up everything else sent to it. ``token`` is
    ``model_token(estimator)``, computed here when not given.
    """
    if token is None:
        token = model_token(estimator)
    return (PICKLED_MODEL_MARK, token, cloudpickle.dumps(estimator, protocol=5))


def stable_model_token(estimator) -> str:
    """Return a token of ``estimator`` that another process computes alike for an equal model.

    :func:`model_token` is seeded per process and hashes arrays as they lie
    in memory, padding bytes included. A tree's node array has 7 padding
    bytes per node whose contents are undefined, so the same forest loaded
    in two processes hashed differently. Here structured arrays are hashed
    without their padding, sets in sorted order, classes by their names, and
    random states (which skops restores afresh on each load) by their type
    alone.

    Examples
    --------
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> tree = DecisionTreeClassifier(random_state=0).fit([[0.0], [1.0], [2.0]], [0, 1, 1])
    >>> copy = pickle.loads(pickle.dumps(tree))
    >>> stable_model_token(copy) == stable_model_token(tree)
    True
    """
    writer = _DigestWriter()
    pickler = _StablePickler(writer, protocol=5)
    # Without the memo, an object referred to twice is written twice, so the
    # bytes do not depend on which equal objects happen to be the same one.
    pickler.fast = True
    try:
        pickler.dump(estimator)
    except (ValueError, RecursionError, pickle.PicklingError):
        # A model that refers to itself needs the memo: cloudpickle reports
        # the endless recursion without it as a PicklingError.
        writer = _DigestWriter()
        _StablePickler(writer, protocol=5).dump(estimator)
    return writer.digest.hexdigest()


class _DigestWriter:
    """A file-like object that hashes what is written to it."""

    def __init__(self):
        self.digest = xxhash.xxh3_128(seed=0)

    def write(self, data) -> int:
        # Protocol 5 passes large buffers as PickleBuffer objects.
        view = memoryview(data)
        self.digest.update(view)
        return view.nbytes


def _named(name):
    """Return ``name``: what a token writes in place of an object named by it."""
    return name


def _defined_by_value(cls) -> bool:
    """Return True for a class that pickle cannot find by name, such as one defined in a script."""
    if cls.__module__ in ("__main__", "__mp_main__"):
        return True
    found = sys.modules.get(cls.__module__)
    for part in cls.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is not cls


class _StablePickler(cloudpickle.Pickler):
    """A pickler that writes equal models alike: no padding bytes, sets sorted."""

    def reducer_override(self, obj):
        if isinstance(obj, type) and _defined_by_value(obj):
            # A class by its name: cloudpickle writes a class defined in a
            # script by value, with an id drawn anew in each process.
            return (_named, (f"class {obj.__module__}.{obj.__qualname__}",))
        if isinstance(obj, np.ndarray) and obj.dtype.names is not None:
            from numpy.lib import recfunctions

            if recfunctions.repack_fields(obj.dtype) != obj.dtype:
                return (np.asarray, (recfunctions.repack_fields(obj),))
        if isinstance(obj, (np.random.RandomState, np.random.Generator)):
            # A random state left on a fitted model does not change its
            # predictions, and skops restores a fresh one on each load.
            return (_named, (type(obj).__name__,))
        if isinstance(obj, (set, frozenset)):
            try:
                items = sorted(obj)
            except TypeError:
                items = sorted(obj, key=repr)
            return (type(obj), (items,))
        return super().reducer_override(obj)


def model_token(estimator) -> str:
    """Return a token of ``estimator``'s pickled state, without copying its arrays.

    The estimator is pickled with out-of-band buffers (pickle protocol 5),
    so that its arrays are hashed where they are rather than copied into one
    payload first: 16 ms for an 80 MiB forest here, where pickling it into
    one payload alone took 51 ms. Equal tokens mean equal pickles. A
    copy of the estimator can pickle to other bytes (pickle records which
    objects are shared), so it may get another token and be sent again.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LinearRegression
    >>> model = LinearRegression().fit(np.eye(3), [1.0, 2.0, 3.0])
    >>> before = model_token(model)
    >>> model_token(model) == before
    True
    >>> model.coef_[0] += 1.0
    >>> model_token(model) == before
    False
    """
    buffers = []
    header = cloudpickle.dumps(estimator, protocol=5, buffer_callback=buffers.append)
    return content_token(header, *(buffer.raw() for buffer in buffers))


#: Seed of this process's tokens. A token names a model only within one
#: driver process and its workers. XXH3 is fast but not collision-resistant,
#: so an unknown seed keeps anyone from crafting a model with another's token.
_TOKEN_SEED = secrets.randbits(64)


def content_token(*parts) -> str:
    """Return a 128-bit XXH3 token of the bytes-like ``parts``, such as a pickled model.

    Each part is hashed with its length, so that parts cannot run into one
    another. Every call that sends a model to workers computes its token.
    XXH3 hashed 80 MiB in 8 ms here, where BLAKE2b took 84 ms on one thread.
    Equal parts get equal tokens within one process, and other tokens in
    another process.

    Examples
    --------
    >>> len(content_token(b"model"))
    32
    >>> content_token(bytes(2**25)) == content_token(bytes(2**25))
    True
    >>> content_token(bytes(2**25)) == content_token(bytes(2**25 - 1) + b"x")
    False
    >>> content_token(b"ab", b"c") == content_token(b"a", b"bc")
    False
    """
    digest = xxhash.xxh3_128(seed=_TOKEN_SEED)
    digest.update(len(parts).to_bytes(8, "little"))
    for part in parts:
        view = memoryview(part).cast("B")
        digest.update(len(view).to_bytes(8, "little"))
        digest.update(view)
    return digest.hexdigest()


def check_output_rows(estimator, method, out, rows, where) -> None:
    """Raise a BlockError unless ``out`` has ``rows`` rows; ``where`` names the input rows."""
    parts = out if is_multi_part(out) else (out,)
    for part in parts:
        returned = output_rows(part)
        if returned != rows:
            raise BlockError(
                f"{type(estimator).__name__}.{method} returned "
                f"{describe_returned(part, returned)} for {where}. postfit needs a row-wise "
                "method: one output row per input row, in every part of the output."
            )


def _is_pickled_model(model) -> bool:
    return type(model) is tuple and len(model) == 3 and model[0] == PICKLED_MODEL_MARK


def _load_once(cache, max_models, token, load):
    """Return the model cached under ``token``, or ``load()`` it and cache it.

    The cache keeps the newest ``max_models`` models.
    """
    with _CACHE_LOCK:
        if token in cache:
            cache.move_to_end(token)
            return cache[token]
        # The oldest go before the load, so that no more than ``max_models``
        # models are in memory at once.
        while len(cache) >= max_models:
            cache.popitem(last=False)
        estimator = load()
        cache[token] = estimator
        return estimator


def resolve_model(model):
    """Return the estimator for ``model``, loading a :class:`ModelRef` or pickled model once."""
    if _is_pickled_model(model):
        _, token, payload = model
        return _load_once(_PICKLED_CACHE, PICKLED_MODELS_KEPT, token, lambda: pickle.loads(payload))
    if isinstance(model, ModelRef):
        return _load_once(_MODEL_CACHE, 1, model.token, model.load)
    return model


@dataclass
class Block:
    """One unit of work: rows ``start:stop`` of the input, numbered ``index``.

    ``data`` is either the rows themselves or a loader with a ``load()``
    method that reads them inside the worker (shared memory, a file part).
    ``start`` and ``stop`` are None for sources whose row offsets are not
    known before reading, such as CSV byte ranges.
    """

    index: int
    start: int | None
    stop: int | None
    data: Any = field(repr=False)
    #: Index of the last input block that this block merges, when it merges several.
    last_index: int | None = None

    def describe(self) -> str:
        if self.last_index is not None and self.last_index != self.index:
            name = f"blocks {self.index} to {self.last_index}"
        else:
            name = f"block {self.index}"
        if self.start is None:
            return name
        return f"{name} (rows {self.start} to {self.stop})"


def _thread_controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


class _NoLimit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def limit_threads(n_threads, user_api=None):
    """Return a context manager limiting BLAS and OpenMP pools (None: no limit)."""
    if n_threads is None:
        return _NoLimit()
    return _thread_controller().limit(limits=n_threads, user_api=user_api)


def restore_feature_names(estimator, data, start):
    """Wrap a positional 2-D block in a frame with the fitted feature names.

    For an estimator fitted without names, a pandas frame's columns are
    numbered instead.

    The driver has already warned once that the input lacks feature names;
    restoring them here keeps scikit-learn from repeating that warning for
    every block. A NumPy block is wrapped without a copy. A list of rows is
    first converted with ``np.asarray``, as scikit-learn converts it. A sparse
    block becomes a frame of sparse columns, which scikit-learn turns back
    into a sparse matrix.
    """
    names = getattr(estimator, "feature_names_in_", None)
    columns = getattr(data, "columns", None)
    if names is None:
        if columns is not None and hasattr(data, "set_axis"):
            # Fitted without names: a pandas frame's names become positions,
            # which scikit-learn reads as no names, without its warning.
            return data.set_axis(range(len(columns)), axis=1)
        return data
    if columns is not None and hasattr(data, "set_axis") and len(columns) == len(names):
        # A pandas frame with positional column names (0, 1, ...) gets the fitted ones.
        return data.set_axis(names, axis=1)
    rows = np.asarray(data) if isinstance(data, (list, tuple)) else data
    is_sparse = sp.issparse(rows)
    if not (isinstance(rows, np.ndarray) or is_sparse) or rows.ndim != 2:
        return data
    if rows.shape[1] != len(names):
        return data
    if rows.dtype.kind in "US":
        # scikit-learn rejects an array of strings where a frame of strings
        # would be converted to numbers, so the array goes as it is.
        return data
    data = rows
    import pandas as pd

    index = pd.RangeIndex(start or 0, (start or 0) + data.shape[0])
    if is_sparse:
        return pd.DataFrame.sparse.from_spmatrix(data, index=index, columns=names)
    return pd.DataFrame(data, columns=names, index=index, copy=False)


def call_method(estimator, method, data, kwargs=None):
    """Call ``method`` (a method name, or a function of the estimator and rows) on data."""
    if callable(method):
        return method(estimator, data, **(kwargs or {}))
    return getattr(estimator, method)(data, **(kwargs or {}))


def _caller_config(config):
    """Return a context that applies scikit-learn ``config`` when it differs from this thread's."""
    if config is None:
        return contextlib.nullcontext()
    import sklearn

    if sklearn.get_config() == config:
        return contextlib.nullcontext()
    return sklearn.config_context(**config)


def run_block(
    model,
    method: str,
    block: Block,
    kwargs=None,
    inner_threads=None,
    thread_api=None,
    restore_names=False,
    sink=None,
    config=None,
):
    """Score one block and return its output, or a sink receipt.

    Parameters
    ----------
    model : estimator or ModelRef
        The fitted estimator, or a reference that the worker resolves once.
    method : str or callable
        Name of the post-fit method, such as ``"predict_proba"``, or a
        picklable function ``method(estimator, rows, **kwargs)`` whose
        result is returned as it is, without the row count check (scoring
        uses it to reduce a block to the statistics of its metrics).
    block : Block
        The rows to score, or a loader for them.
    kwargs : dict, optional
        Extra keyword arguments of the method.
    inner_threads : int, optional
        Limit for the estimator's BLAS and OpenMP thread pools in this call.
    thread_api : str, optional
        Which pools ``inner_threads`` limits: ``"openmp"``, ``"blas"`` or None
        for both. Thread backends limit BLAS once from the driver because an
        OpenBLAS limit set from a worker thread can be undone by another.
    restore_names : bool, default=False
        Whether to wrap positional NumPy blocks in a frame with the fitted
        feature names.
    sink : object, optional
        An object with ``write(block, output)`` that stores the output inside
        the worker; its return value replaces the output.
    config : dict, optional
        The caller's ``sklearn.get_config()``, applied around the call. A
        worker thread or process does not share the caller's configuration
        (``transform_output``, ``assume_finite``, ...).

    Returns
    -------
    output : object
        The method's output for these rows, :class:`EmptyOutput` for a block
        of zero rows, or the sink's receipt.
    """
    estimator = resolve_model(model)
    data = block.data.load() if hasattr(block.data, "load") else block.data
    rows = n_rows(data)
    if block.start is not None and block.stop is not None and rows != block.stop - block.start:
        raise BlockError(
            f"{block.describe()} was read with {rows} rows instead of "
            f"{block.stop - block.start}: the input changed while it was scored, or a "
            "source returned other rows than requested. Score an input that does not change "
            "during the run."
        )
    if rows == 0:
        out = EmptyOutput()
        return sink.write(block, out) if sink is not None else out

    if restore_names:
        data = restore_feature_names(estimator, data, block.start)
    with limit_threads(inner_threads, thread_api), _caller_config(config):
        out = call_method(estimator, method, data, kwargs)

    if not callable(method):
        where = f"{block.describe()}, which has {rows} row{'' if rows == 1 else 's'}"
        check_output_rows(estimator, method, out, rows, where)
    if sink is not None:
        return sink.write(block, out)
    return out
