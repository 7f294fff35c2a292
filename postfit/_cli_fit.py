"""The ``postfit fit`` subcommand: train an estimator with ``partial_fit`` over input files.

The estimator is named on the command line by a saved unfitted estimator
file, or by a class path with parameters such as
``sklearn.linear_model.SGDClassifier:loss=log_loss,alpha=1e-4``. A class
path is imported only from the packages in ``ALLOWED_PACKAGES``. Its
parameter values are read as Python literals (``ast.literal_eval``), and a
bare word is read as a string. Nothing on the command line is ever evaluated
as code.
"""

from __future__ import annotations

import ast
import importlib
import os
import re
import sys
import time

__all__ = ["ALLOWED_PACKAGES", "add_fit_parser", "parse_estimator_spec"]

#: Top-level packages whose classes a class path may name.
ALLOWED_PACKAGES = ("sklearn",)

_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_MODEL_FILE_ENDINGS = (".skops", ".pkl", ".pickle", ".joblib")


def _usage_error(message):
    from .cli import UsageError

    return UsageError(message)


def _parse_value(node, key, text):
    """Return the value of one ``key=value`` parameter: a literal, or a bare word as a string."""
    if isinstance(node, ast.Name):
        return node.id
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise _usage_error(
            f"Invalid value for parameter {key!r} in {text!r}: {ast.unparse(node)!r} is "
            "not a Python literal. Use numbers, quoted strings, True/False/None, tuples, "
            "lists or dicts of those, or a bare word for a string."
        ) from exc


def _parse_parameters(text):
    """Return the dict of ``key=value,...`` without evaluating anything."""
    if not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError as exc:
        raise _usage_error(
            f"Invalid estimator parameters {text!r}: expected key=value pairs separated by "
            "commas, such as loss=log_loss,alpha=1e-4."
        ) from exc
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise _usage_error(
            f"Invalid estimator parameters {text!r}: every parameter needs a name, as in "
            "alpha=1e-4."
        )
    return {k.arg: _parse_value(k.value, k.arg, text) for k in call.keywords}


def _import_class(path):
    """Import the estimator class at a dotted ``path`` from an allowed package."""
    if not _DOTTED_NAME.fullmatch(path):
        raise _usage_error(
            f"Invalid estimator class path {path!r}. Pass a dotted name such as "
            "sklearn.linear_model.SGDClassifier, or the path of a saved estimator file."
        )
    module_name, class_name = path.rsplit(".", 1)
    if module_name.split(".")[0] not in ALLOWED_PACKAGES:
        raise _usage_error(
            f"Estimator class {path!r} is outside the packages that postfit imports from "
            f"the command line ({', '.join(ALLOWED_PACKAGES)}). Save the estimator to a "
            "file with postfit.save_model and pass that file instead."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _usage_error(f"Cannot import module {module_name!r} of {path!r}: {exc}.") from exc
    estimator_class = getattr(module, class_name, None)
    if not isinstance(estimator_class, type) or not hasattr(estimator_class, "get_params"):
        raise _usage_error(
            f"{path!r} is not a scikit-learn estimator class. Check the spelling, for "
            "example sklearn.linear_model.SGDClassifier."
        )
    return estimator_class


def parse_estimator_spec(spec, trusted=False):
    """Return the unfitted estimator that ``spec`` names.

    Parameters
    ----------
    spec : str
        A saved estimator file (``.skops``, or a pickle with ``trusted``),
        or ``package.module.Class`` optionally followed by ``:`` and
        ``key=value`` parameters separated by commas.
    trusted : bool, default=False
        Load pickle files and every type in a skops file.

    Examples
    --------
    >>> parse_estimator_spec("sklearn.linear_model.SGDClassifier:loss=log_loss,alpha=1e-3")
    SGDClassifier(alpha=0.001, loss='log_loss')
    >>> parse_estimator_spec("sklearn.neural_network.MLPClassifier:hidden_layer_sizes=(8, 4)")
    MLPClassifier(hidden_layer_sizes=(8, 4))
    """
    is_file = spec.lower().endswith(_MODEL_FILE_ENDINGS) or "/" in spec or os.path.exists(spec)
    if is_file:
        from ._models import load_model

        return load_model(spec, trusted=trusted)

    path, _, parameters = spec.partition(":")
    estimator_class = _import_class(path.strip())
    params = _parse_parameters(parameters)
    try:
        return estimator_class(**params)
    except TypeError as exc:
        raise _usage_error(
            f"Invalid parameters for {estimator_class.__name__}: {exc}. See "
            f"help({path.strip()}) for its parameters."
        ) from exc


# The subcommand -------------------------------------------------------------


def _random_state(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return value


def _non_negative_float(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def add_fit_parser(subparsers):
    """Add the ``fit`` subcommand to the ``postfit`` command's subparsers."""
    from . import cli

    parser = subparsers.add_parser(
        "fit",
        help="train an estimator with partial_fit over input files larger than memory",
        description="Stream the input block by block through the estimator's partial_fit "
        "for one or more epochs, then save the trained estimator. Only two blocks are "
        "in memory at a time.",
    )
    parser.add_argument(
        "estimator",
        metavar="ESTIMATOR_SPEC",
        help="a saved unfitted estimator (.skops, or .pkl/.joblib with --trust-model), or "
        "a class path with parameters, such as "
        "sklearn.linear_model.SGDClassifier:loss=log_loss,alpha=1e-4 "
        f"(classes from: {', '.join(ALLOWED_PACKAGES)})",
    )
    cli.add_verbose_argument(parser)
    parser.add_argument(
        "--trust-model",
        action="store_true",
        help="load a pickle ESTIMATOR_SPEC file (which can run any code it contains); only "
        "for files from a source you trust",
    )
    cli._add_input_arguments(parser)
    parser.add_argument(
        "--target",
        help="input column that contains the target; leave it out for estimators trained "
        "without one (scalers, clustering)",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="where to save the trained estimator (.skops)"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing file at --output"
    )
    parser.add_argument(
        "--max-iter",
        type=cli._positive_int,
        default=1,
        help="number of epochs (passes over the input); the maximum with --early-stopping "
        "(default: 1)",
    )
    parser.add_argument(
        "--no-shuffle",
        dest="shuffle_blocks",
        action="store_false",
        help="visit blocks in input order in every epoch (default: a new random order each epoch)",
    )
    parser.add_argument(
        "--shuffle-rows", action="store_true", help="also shuffle the rows within each block"
    )
    parser.add_argument(
        "--random-state",
        type=_random_state,
        help="seed of the block and row order, for a reproducible model (default: none)",
    )
    parser.add_argument(
        "--validation",
        nargs="+",
        metavar="VALIDATION_INPUT",
        help="input files scored after each epoch (same format and target column)",
    )
    parser.add_argument(
        "--scoring",
        help="scikit-learn scorer name for --validation, such as accuracy (default: the "
        "estimator's own score)",
    )
    parser.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop when the --validation score has not improved by --tol for "
        "--n-iter-no-change epochs",
    )
    parser.add_argument(
        "--tol",
        type=_non_negative_float,
        default=1e-4,
        help="smallest score improvement that counts, for early stopping (default: 1e-4)",
    )
    parser.add_argument(
        "--n-iter-no-change",
        type=cli._positive_int,
        default=5,
        help="epochs without improvement before early stopping (default: 5)",
    )
    parser.add_argument(
        "--block-size",
        type=cli._positive_int,
        help="rows per block (default: sized from the memory budget)",
    )
    parser.add_argument(
        "--memory-budget",
        type=cli._memory_size,
        default="auto",
        help="memory the two blocks held at once may use, in bytes or with a unit such as "
        "512MiB or 2GB (default: auto, a quarter of available memory, 256 MiB to 4 GiB)",
    )
    cli.add_progress_flags(parser, "show a progress bar of blocks and epochs")
    parser.set_defaults(handler=run_fit)


def _check_output(path, overwrite):
    from .exceptions import OutputExistsError
    from .io._paths import check_output_folder

    if not str(path).lower().endswith(".skops"):
        raise _usage_error(
            f"Invalid --output {path!r}: the trained estimator is saved as skops. End the "
            "path with .skops."
        )
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError(
            f"{path!r} already exists. Pass --overwrite to replace it, or choose another path."
        )
    check_output_folder(path)


def _check_target(source, target):
    if target is None:
        return
    if not source.tabular:
        raise _usage_error(
            "--target needs a table input (Parquet or CSV) that contains the target."
        )
    names = source.all_column_names()
    if target not in names:
        raise _usage_error(
            f"Target column {target!r} not found in the input, which has columns {names}."
        )


def _save(estimator, path):
    """Save atomically: a partly written file never appears under ``path``."""
    from ._models import save_model

    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp.skops")
    try:
        save_model(estimator, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def run_fit(args):
    """Run ``postfit fit``; return the exit status."""
    from sklearn.utils._param_validation import InvalidParameterError

    from . import cli
    from .incremental import Incremental

    _check_output(args.output, args.overwrite)
    estimator = parse_estimator_spec(args.estimator, trusted=bool(args.trust_model))
    if not hasattr(estimator, "partial_fit"):
        raise _usage_error(
            f"{type(estimator).__name__} has no partial_fit method, so postfit fit cannot "
            "train it block by block. Choose an estimator that has one, such as "
            "sklearn.linear_model.SGDClassifier."
        )
    if args.early_stopping and not args.validation:
        raise _usage_error("--early-stopping needs --validation files to score each epoch.")
    if args.scoring and not args.validation:
        raise _usage_error(
            "--scoring scores the --validation files after each epoch; pass --validation "
            "too, or drop --scoring."
        )

    source = cli._open_inputs(args.inputs, args.input_format, args.columns, cli.csv_options(args))
    _check_target(source, args.target)
    fit_options = {}
    if args.validation:
        validation = cli._open_inputs(
            args.validation, args.input_format, args.columns, cli.csv_options(args)
        )
        _check_target(validation, args.target)
        fit_options = {"X_val": validation, "y_val": args.target}

    model = Incremental(
        estimator,
        scoring=args.scoring,
        shuffle_blocks=args.shuffle_blocks,
        random_state=args.random_state,
        shuffle_rows=args.shuffle_rows,
        max_iter=args.max_iter,
        early_stopping=args.early_stopping,
        tol=args.tol,
        n_iter_no_change=args.n_iter_no_change,
        block_size=args.block_size or "auto",
        memory_budget=args.memory_budget,
        progress=args.progress if args.progress is not None else sys.stderr.isatty(),
    )
    started = time.perf_counter()
    try:
        model.fit(source, args.target, **fit_options)
    except InvalidParameterError as exc:
        raise _usage_error(str(exc)) from exc
    seconds = time.perf_counter() - started

    _save(model.estimator_, args.output)
    print(
        f"fit: trained {type(model.estimator_).__name__} for {model.n_iter_} epoch(s) in "
        f"{seconds:.2f} s and saved it to {args.output}"
    )
    for epoch, score in enumerate(model.epoch_scores_, start=1):
        print(f"epoch {epoch} {args.scoring or 'score'} {score:.6g}")
    return cli.EXIT_OK
