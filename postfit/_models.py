"""Model files: skops files loaded with an explicit list of trusted types, pickles only on trust.

Loading a pickle (``.pkl``, ``.pickle``, ``.joblib``) runs whatever code the
file names, so a pickle is loaded only when the caller passes
``trusted=True``. A skops file names the types it contains and builds them
without running their code. postfit trusts the types of scikit-learn,
NumPy, SciPy and postfit itself in skops files and rejects any other type
unless the caller trusts it by name.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile

from .exceptions import UntrustedModelError
from .io._source import InvalidFileError

logger = logging.getLogger(__name__)

__all__ = ["describe_model", "load_model", "save_model", "trusted_types"]

#: Modules whose types postfit trusts in skops files, beyond skops' own defaults.
TRUSTED_MODULE_PREFIXES = ("sklearn.", "numpy.", "scipy.", "postfit.")

PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
SKOPS_SUFFIXES = (".skops",)
_ZIP_MAGIC = b"PK\x03\x04"
# Pickle protocols 2 and later start with the PROTO opcode.
_PICKLE_MAGIC = b"\x80"


def _open(path):
    import fsspec

    return fsspec.open(os.fspath(path), "rb")


def _read_bytes(path) -> bytes:
    try:
        with _open(path) as f:
            return f.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"Model file not found: {os.fspath(path)!r}.") from exc
    except IsADirectoryError as exc:
        raise IsADirectoryError(
            f"Model path {os.fspath(path)!r} is a directory; pass a .skops or pickle file."
        ) from exc


def trusted_types(untrusted, trusted=None):
    """Split skops' list of ``untrusted`` types into (accepted, rejected).

    A type is accepted when its module is one of ``TRUSTED_MODULE_PREFIXES``
    or when ``trusted`` names it.
    """
    named = {t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}" for t in trusted or []}
    accepted, rejected = [], []
    for name in untrusted:
        if name in named or name.startswith(TRUSTED_MODULE_PREFIXES):
            accepted.append(name)
        else:
            rejected.append(name)
    return accepted, rejected


def _load_skops(data, path, trusted):
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(data=data)
    except zipfile.BadZipFile as exc:
        raise InvalidFileError(
            f"{os.fspath(path)!r} is not a skops file: a skops file is a zip archive, and "
            f"this one cannot be opened as one ({exc}). Pass the file that "
            "postfit.save_model or skops.io.dump wrote."
        ) from exc
    if trusted is True:
        return sio.loads(data, trusted=untrusted)
    accepted, rejected = trusted_types(untrusted, trusted if isinstance(trusted, list) else None)
    if rejected:
        raise UntrustedModelError(
            f"The skops file {os.fspath(path)!r} contains types that postfit does not trust: "
            f"{', '.join(rejected)}. Loading them could run their code. If you trust this "
            "file, pass trusted=[those type names] (or trusted=True, or --trust-model on "
            "the command line)."
        )
    return sio.loads(data, trusted=accepted)


def load_model(path, trusted=False):
    """Load a fitted model from a skops file, or from a pickle that the caller trusts.

    Parameters
    ----------
    path : str or path-like
        A ``.skops`` file, or a ``.pkl`` / ``.pickle`` / ``.joblib`` file;
        local paths or fsspec URLs. A file with another ending is read as
        skops when it is a zip archive, as a pickle when it starts with
        the pickle protocol marker, and rejected otherwise.
    trusted : bool or list of str, default=False
        ``True`` trusts the file completely: pickles are loaded and every
        type of a skops file is accepted. A list names extra types accepted
        in a skops file. Pickles need ``True``.

    Returns
    -------
    model : object

    Raises
    ------
    UntrustedModelError
        For a pickle without ``trusted=True``, or a skops file holding types
        outside scikit-learn, NumPy, SciPy and postfit that ``trusted`` does
        not name.
    postfit.io.InvalidFileError
        For a file that is neither a skops archive nor a readable pickle.

    Examples
    --------
    >>> import os, tempfile
    >>> from sklearn.linear_model import LogisticRegression
    >>> from postfit import load_model, save_model
    >>> path = os.path.join(tempfile.mkdtemp(), "model.skops")
    >>> save_model(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), path)
    >>> load_model(path)
    LogisticRegression()
    """
    data = _read_bytes(path)
    text = os.fspath(path).lower()
    is_skops = text.endswith(SKOPS_SUFFIXES) or (
        not text.endswith(PICKLE_SUFFIXES) and data.startswith(_ZIP_MAGIC)
    )
    if is_skops:
        return _load_skops(data, path, trusted)
    if not text.endswith(PICKLE_SUFFIXES) and not data.startswith(_PICKLE_MAGIC):
        raise InvalidFileError(
            f"{os.fspath(path)!r} is neither a skops file (a zip archive) nor a pickle. "
            "Pass a model file written by postfit.save_model, skops or joblib; name a "
            "compressed joblib file with the .joblib ending."
        )
    if trusted is not True:
        raise UntrustedModelError(
            f"{os.fspath(path)!r} is a pickle, and loading a pickle runs any code it contains. "
            "Load it only if you trust its source: pass trusted=True (--trust-model on the "
            "command line), or save the model with postfit.save_model(model, 'model.skops')."
        )
    import joblib

    logger.info("loading trusted pickle %s", os.fspath(path))
    import io

    try:
        return joblib.load(io.BytesIO(data))
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError) as exc:
        # Truncated or non-pickle bytes fail inside the unpickler with any of these.
        raise InvalidFileError(
            f"Cannot load {os.fspath(path)!r} as a pickle: {type(exc).__name__}: {exc}. "
            "The file is damaged or is not a pickle."
        ) from exc


def save_model(model, path):
    """Save a model as a skops file (``.skops``), or as a pickle for the pickle endings.

    Parameters
    ----------
    model : object
        A fitted estimator or pipeline.
    path : str or path-like
        Where to write: a ``.skops`` path (recommended: it loads without
        running code), or ``.pkl`` / ``.pickle`` / ``.joblib``.
    """
    import fsspec

    text = os.fspath(path).lower()
    if text.endswith(PICKLE_SUFFIXES):
        import joblib

        with fsspec.open(os.fspath(path), "wb") as f:
            joblib.dump(model, f)
        return
    if not text.endswith(SKOPS_SUFFIXES):
        raise ValueError(
            f"Cannot tell the model format from {os.fspath(path)!r}. End the path with "
            ".skops (recommended) or .pkl, .pickle, .joblib."
        )
    import skops.io as sio

    with fsspec.open(os.fspath(path), "wb") as f:
        f.write(sio.dumps(model))


# Describing a model ---------------------------------------------------------------

_ENCODERS = ("OneHotEncoder", "OrdinalEncoder", "TargetEncoder")


def _final_step(transformer):
    steps = getattr(transformer, "steps", None)
    return steps[-1][1] if steps else transformer


def _column_kinds(estimator) -> dict:
    """Return ``{column: kind}`` read from a leading ColumnTransformer, or {} when there is none.

    scikit-learn does not store the input dtypes, so the kind is what the
    transformer that takes the column expects: categories of an encoder, or
    numbers.
    """
    first = estimator.steps[0][1] if hasattr(estimator, "steps") else estimator
    transformers = getattr(first, "transformers_", None)
    if transformers is None:
        return {}
    kinds = {}
    for _, transformer, columns in transformers:
        if isinstance(transformer, str) or columns is None:
            kind = "any (passed through)" if transformer == "passthrough" else "unused"
        else:
            step = _final_step(transformer)
            steps = getattr(transformer, "steps", [(None, transformer)])
            encoder = next((s for _, s in steps if type(s).__name__ in _ENCODERS), None)
            if encoder is not None and hasattr(encoder, "categories_"):
                dtypes = {str(c.dtype) for c in encoder.categories_}
                kind = f"categorical ({', '.join(sorted(dtypes))} categories)"
            else:
                kind = f"numeric (into {type(step).__name__})"
        names = getattr(first, "feature_names_in_", None)
        for column in columns if isinstance(columns, (list, tuple)) else list(columns):
            if names is not None and isinstance(column, (int,)) and not isinstance(column, bool):
                column = names[column]
            kinds[str(column)] = kind
    return kinds


def is_fitted_model(model) -> bool:
    """Return False for an estimator known to be unfitted, True otherwise.

    The rule is the wrapper's own: see ``postfit.wrappers._is_fitted``.
    """
    from .wrappers import _is_fitted

    return not hasattr(model, "fit") or _is_fitted(model)


def describe_model(model) -> str:
    """Return a text description of a fitted model: estimator, features, classes, outputs."""
    from .io import output_names

    inner = (
        getattr(model, "estimator_", model) if type(model).__name__ == "ParallelPostFit" else model
    )
    lines = [f"estimator: {type(inner).__name__} ({type(inner).__module__})"]
    fitted = is_fitted_model(inner)
    if not fitted and hasattr(inner, "fit"):
        lines.append("fitted: no (train it with postfit fit, or fit in Python, before scoring)")
    steps = getattr(inner, "steps", None)
    if steps:
        lines.append("steps: " + " -> ".join(f"{name} ({type(s).__name__})" for name, s in steps))

    names = getattr(inner, "feature_names_in_", None)
    count = getattr(inner, "n_features_in_", None)
    kinds = _column_kinds(inner)
    if names is not None:
        lines.append(f"features ({len(names)}):")
        for name in names:
            lines.append(f"  {name}: {kinds.get(str(name), 'numeric')}")
    elif count is not None:
        lines.append(f"features: {count} unnamed numeric columns (fitted on an array)")
    else:
        lines.append("features: not recorded by this estimator")

    classes = getattr(inner, "classes_", None)
    if classes is not None:
        shown = ", ".join(str(c) for c in list(classes)[:20])
        more = ", ..." if len(classes) > 20 else ""
        lines.append(f"classes ({len(classes)}): {shown}{more}")

    methods = [
        m
        for m in (
            "predict",
            "predict_proba",
            "predict_log_proba",
            "decision_function",
            "score_samples",
            "transform",
        )
        if hasattr(inner, m)
    ]
    lines.append(f"methods: {', '.join(methods) or 'none (this is not an estimator)'}")
    if not fitted or not methods:
        return "\n".join(lines)
    lines.append("output columns:")
    for method in methods:
        naming = output_names(inner, method)
        width = len(naming.labels) if naming.labels is not None else None
        if method == "decision_function" and width == 2:
            # scikit-learn's binary classifiers return one column of scores.
            width = None
        shown = naming.names(width)
        if naming.labels is None and method == "transform":
            shown = ["x_0", "x_1", "..."]
        lines.append(f"  {method}: {', '.join(shown)}")
    return "\n".join(lines)
