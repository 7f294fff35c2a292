"""The ``postfit`` command: score files with a saved model, compute metrics, describe a model.

Exit status: 0 on success, and 1 when the run failed because of an error in
the data, the model or a worker. A usage error exits with 2, as argparse
does: a bad option, a missing file or column, an untrusted model, or an
existing output.

Each subcommand is added by one function ``_add_<name>_parser(subparsers)``
listed in ``SUBCOMMANDS``; it adds its parser and sets ``handler`` to the
function that runs it and returns the exit status. A new subcommand, such as
``fit``, is one more such function appended to that list.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import warnings
from functools import partial

import numpy as np

from . import __version__
from ._errors import interrupt_behind

logger = logging.getLogger(__name__)

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

FORMATS = ("parquet", "csv", "npy", "zarr")
METHODS = (
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "score_samples",
    "transform",
)


class UsageError(Exception):
    """The command line requests something that cannot work; exit status 2."""


def _usage_errors():
    """Return the exception types that mean the user must change the command."""
    from .exceptions import OutputExistsError, UntrustedModelError
    from .io import InputError

    return (
        UsageError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        PermissionError,
        UntrustedModelError,
        OutputExistsError,
        InputError,
    )


# Argument types -------------------------------------------------------------------


def _column_list(text):
    columns = [c.strip() for c in text.split(",") if c.strip()]
    if not columns:
        raise argparse.ArgumentTypeError(f"expected comma-separated column names, got {text!r}")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(
            f"column {repeated[0]!r} is listed more than once in {text!r}; list each once"
        )
    return columns


def _column_types(text):
    import pyarrow as pa

    types = {}
    for item in text.split(","):
        name, _, alias = item.partition("=")
        name, alias = name.strip(), alias.strip()
        if not name or not alias:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated NAME=TYPE pairs such as 'zip=string,amount=float64', "
                f"got {text!r}"
            )
        try:
            types[name] = pa.type_for_alias(alias)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(
                f"invalid type {alias!r} for column {name!r}; use a pyarrow type name such as "
                "string, int64, float64, bool or timestamp[s]"
            ) from exc
    return types


def add_progress_flags(parser, description):
    """Add ``--progress`` / ``--no-progress``; without either, the bar shows on a terminal."""
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help=f"{description} (default: when stderr is a terminal)",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )


def _memory_size(text):
    from ._plan import parse_memory_budget

    try:
        parse_memory_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def _workers(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value == 0:
        raise argparse.ArgumentTypeError(
            f"expected a number of workers (-1 for all cores), got {text!r}"
        )
    return value


# Shared options -------------------------------------------------------------------


def add_verbose_argument(parser):
    """Accept -v after a subcommand too."""
    # SUPPRESS keeps a -v given before the subcommand from being reset by
    # this parser's default.
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log to stderr: -v for run summaries, -vv for planning details",
    )


def _add_model_argument(parser):
    add_verbose_argument(parser)
    parser.add_argument(
        "model", help="fitted model file: .skops, or .pkl/.joblib with --trust-model"
    )
    parser.add_argument(
        "--trust-model",
        action="store_true",
        help="load pickle files (which can run any code they contain) and every type in a "
        ".skops file; only for files from a source you trust",
    )


def _add_input_arguments(parser):
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="input files, globs, directories or fsspec URLs (Parquet, CSV, .npy or Zarr)",
    )
    parser.add_argument(
        "--input-format",
        choices=FORMATS,
        help="format of the inputs (default: from the first input's file name ending)",
    )
    parser.add_argument(
        "--columns",
        type=_column_list,
        metavar="A,B",
        help="comma-separated input columns that the model takes as features (default: "
        "the columns the model was fitted with, or all columns)",
    )
    parser.add_argument(
        "--column-types",
        type=_column_types,
        metavar="NAME=TYPE,...",
        help="CSV inputs: types of columns whose first MiB of rows does not show their type, "
        "as pyarrow type names, such as zip=string,amount=float64 (default: inferred)",
    )
    parser.add_argument(
        "--delimiter",
        type=_delimiter,
        metavar="CHAR",
        help="CSV inputs: the character between fields (default: a tab for .tsv files, "
        "else a comma)",
    )
    parser.add_argument(
        "--null-values",
        type=_null_values,
        metavar="A,B",
        help="CSV inputs: comma-separated strings read as missing values; an empty value "
        "(--null-values '') reads only empty fields as missing (default: pyarrow's list, "
        "which includes NA, N/A, NaN and null)",
    )
    parser.add_argument(
        "--newlines-in-values",
        action="store_true",
        help="CSV inputs: quoted values contain newlines (each file is then one block)",
    )


def _delimiter(text):
    """Parse --delimiter: one character, where the two characters \\t stand for a tab."""
    if text == "\\t":
        return "\t"
    if len(text) != 1 or not text.isascii() or text in '"\r\n':
        raise argparse.ArgumentTypeError(
            f"invalid delimiter {text!r}: pass one ASCII character other than a quote or a "
            "line break, such as ';', or '\\t' for a tab"
        )
    return text


def _null_values(text):
    """Parse --null-values: comma-separated strings, where '' is the empty field alone."""
    return [""] if text == "" else text.split(",")


def csv_options(args) -> dict:
    """Return the CSV reading options given on the command line, by read_csv's names."""
    options = {
        "column_types": getattr(args, "column_types", None),
        "delimiter": getattr(args, "delimiter", None),
        "null_values": getattr(args, "null_values", None),
        "newlines_in_values": getattr(args, "newlines_in_values", False),
    }
    return {name: value for name, value in options.items() if value}


def _add_run_arguments(parser):
    parser.add_argument(
        "--backend",
        default="auto",
        metavar="NAME",
        help="what runs the blocks: auto, sequential, threading, loky (processes), or dask "
        "with --scheduler (default: auto)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --backend dask: the address of a running Dask scheduler, such as "
        "tcp://10.0.0.5:8786 (default: DASK_SCHEDULER_ADDRESS). postfit starts no cluster",
    )
    parser.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        default=-1,
        help="number of blocks scored at once; -1 for all cores (default: -1)",
    )
    parser.add_argument(
        "--block-size",
        type=_positive_int,
        metavar="ROWS",
        help="rows per block (default: sized from the memory budget)",
    )
    parser.add_argument(
        "--memory-budget",
        type=_memory_size,
        metavar="SIZE",
        default="auto",
        help="memory the run may use beyond the model, in bytes or with a unit such as "
        "512MiB or 2GB (default: auto, a quarter of available memory, 256 MiB to 4 GiB)",
    )
    add_progress_flags(parser, "show a progress bar with rows/s and ETA")


# Running --------------------------------------------------------------------------


def _load_model(args):
    from ._models import load_model

    try:
        return load_model(args.model, trusted=bool(args.trust_model))
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"The model file {args.model} refers to the module {exc.name!r}, which is not "
            "installed here. Install it, or add its folder to PYTHONPATH, and run again."
        ) from exc


def _load_fitted_model(args):
    """Load the model file and reject an unfitted estimator before any work."""
    from ._models import is_fitted_model

    model = _load_model(args)
    if hasattr(model, "fit") and not is_fitted_model(model):
        raise UsageError(
            f"The model file {args.model} contains an unfitted {type(model).__name__}. "
            "Train it first (postfit fit, or fit in Python) and save the fitted estimator."
        )
    return model


def _open_inputs(inputs, input_format, columns, csv=None):

    fmt = input_format or _guess_format(inputs[0])
    as_given = inputs
    if input_format is not None and fmt != "zarr":
        from .io._paths import files_of_folders

        # The format is given, so a folder's files are read whatever their names.
        inputs = files_of_folders(inputs, _FORMAT_ENDINGS[fmt])
    source = _open_source(inputs, fmt, columns, csv)
    if as_given is not inputs:
        from .io._paths import input_patterns

        # The folders as given, for the check that the output is not read as input later.
        source.inputs = input_patterns(source.fs, as_given)
    return source


#: File name endings of each input format, as the readers filter folders by them.
_FORMAT_ENDINGS = {
    "parquet": (".parquet", ".pq", ".parq"),
    "csv": (".csv", ".tsv", ".txt"),
    "npy": (".npy",),
    "zarr": (".zarr",),
}


def _open_source(inputs, fmt, columns, csv):
    from . import io

    if csv and fmt != "csv":
        options = ", ".join("--" + name.replace("_", "-") for name in csv)
        verb = "applies" if len(csv) == 1 else "apply"
        raise UsageError(f"{options} {verb} to CSV inputs, not to {fmt} inputs.")
    if csv:
        return io.read_csv(inputs, columns=columns, **csv)
    readers = {
        "parquet": io.read_parquet,
        "csv": io.read_csv,
        "npy": io.read_npy,
        "zarr": io.read_zarr,
    }
    if fmt in ("npy", "zarr"):
        if columns:
            raise UsageError(f"--columns applies to tables; {fmt} inputs are arrays.")
        return readers[fmt](inputs)
    return readers[fmt](inputs, columns=columns)


def _guess_format(path):
    text = str(path).rstrip("/").lower()
    for fmt, endings in (
        ("csv", (".csv", ".tsv", ".txt")),
        ("npy", (".npy",)),
        ("zarr", (".zarr",)),
        ("parquet", (".parquet", ".pq", ".parq")),
    ):
        if text.endswith(endings):
            return fmt
    name = text.rsplit("/", 1)[-1]
    if "." not in name or any(char in name for char in "*?[") or os.path.isdir(path):
        # A folder without a format ending ("data", ".", "day=1.0") contains Parquet parts.
        return "parquet"
    raise UsageError(
        f"Cannot tell the format of {path!r} from its name; pass --input-format "
        f"({', '.join(FORMATS)})."
    )


def _wrapper(model, args, scoring=None):
    from .wrappers import ParallelPostFit

    options = {
        "backend": args.backend,
        "n_jobs": args.workers,
        "block_size": args.block_size or "auto",
        "memory_budget": args.memory_budget,
        "progress": args.progress if args.progress is not None else sys.stderr.isatty(),
    }
    if isinstance(model, ParallelPostFit):
        return model.set_params(scoring=scoring, **options)
    return ParallelPostFit(model, scoring=scoring, **options)


def _check_backend(name):
    from .backends import available_backends

    if name == "ray":
        raise UsageError(
            "--backend ray needs a Ray session that the command cannot start or name. "
            "Use ParallelPostFit(..., backend='ray') from Python after your own ray.init(), "
            "or --backend dask --scheduler ADDRESS for a cluster."
        )
    if name not in ("auto", *available_backends()):
        choices = ", ".join(["auto", *available_backends()])
        raise UsageError(f"Invalid --backend {name!r}. Choose one of {choices}.")


@contextlib.contextmanager
def _cluster(args):
    """Connect to the Dask scheduler that ``--backend dask`` runs on, for the body's duration."""
    if args.backend != "dask":
        if args.scheduler:
            raise UsageError("--scheduler applies to --backend dask; pass both, or neither.")
        yield
        return
    import dask

    address = args.scheduler or dask.config.get("scheduler-address", None)
    if not address:
        raise UsageError(
            "--backend dask runs on a running Dask cluster, and postfit starts none. Pass "
            "--scheduler tcp://HOST:8786 (or set DASK_SCHEDULER_ADDRESS) with the address "
            "of its scheduler."
        )
    from distributed import Client

    try:
        # Not the default client: one that fails to connect would stay the
        # default, and later code in this process would find it.
        client = Client(address, timeout="10s", set_as_default=False)
    except (OSError, ValueError) as exc:
        # distributed raises a ValueError for an address it cannot parse.
        raise UsageError(
            f"Cannot connect to the Dask scheduler at {address!r} ({exc}). Check the "
            "address, and that the scheduler is running and reachable from here."
        ) from exc
    with client, client.as_current():
        yield


def _run_predict(args):
    _check_backend(args.backend)
    with _cluster(args):
        return _predict(args)


def _predict(args):
    model = _load_fitted_model(args)
    if not hasattr(model, args.method):
        available = [m for m in METHODS if hasattr(model, m)]
        if not available:
            raise UsageError(
                f"The model file {args.model} contains an object of type "
                f"{type(model).__name__}, which has none of the post-fit methods. Save a "
                "fitted scikit-learn estimator in it, "
                "for example with postfit.save_model(estimator, path)."
            )
        raise UsageError(
            f"{type(model).__name__} has no method {args.method!r}. Its post-fit methods "
            f"are: {', '.join(available)}."
        )
    if args.output is not None and not str(args.output).strip():
        raise UsageError("The output path is empty. Pass -o PATH, for example -o scores/.")
    source = _open_inputs(args.inputs, args.input_format, args.columns, csv_options(args))
    wrapper = _wrapper(model, args)
    result = getattr(wrapper, args.method)(
        source,
        output=args.output,
        overwrite=args.overwrite,
        resume=args.resume,
        keep_columns=args.keep_columns,
    )
    resumed = f", {result.n_resumed} kept from the earlier run" if result.n_resumed else ""
    # A Parquet output keeps one file per block; the other formats join them into one.
    unit = "part" if result.format == "parquet" else "block"
    plural = "" if result.n_blocks == 1 else "s"
    print(
        f"{args.method}: scored {result.n_scored} rows in {result.seconds:.2f} s "
        f"({result.rows_per_second:,.0f} rows/s); {result.path} holds {result.n_rows} rows "
        f"({result.format}, {result.n_blocks} {unit}{plural}{resumed})"
    )
    return EXIT_OK


def _default_scoring(model):
    """Return the metric of a classifier's or regressor's own ``score``, so it streams."""
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(model):
        return "accuracy"
    if is_regressor(model):
        return "r2"
    return None


def _run_score(args):
    _check_backend(args.backend)
    with _cluster(args):
        return _score(args)


def _score(args):
    model = _load_fitted_model(args)
    columns = args.columns
    if columns is not None and args.target is not None and args.target not in columns:
        # --columns names the features; the target is read with them.
        columns = [*columns, args.target]
    source = _open_inputs(args.inputs, args.input_format, columns, csv_options(args))
    scoring = args.scoring or _default_scoring(model)
    if scoring is None and not hasattr(model, "score"):
        raise UsageError(
            f"{type(model).__name__} has no score method of its own. Pass --scoring with a "
            "metric that fits its output (a name from sklearn.metrics.get_scorer_names())."
        )
    if isinstance(scoring, list) and len(scoring) == 1:
        scoring = scoring[0]
    if args.target is None:
        from .scoring import own_score_needs_y

        if scoring is not None or own_score_needs_y(model, unknown=True):
            raise UsageError(
                f"Scoring {type(model).__name__} with {scoring or 'its own score'} needs the "
                "true targets. Pass --target with the input column that contains them."
            )
    else:
        if not source.tabular:
            raise UsageError(
                "--target needs a table input (Parquet or CSV) that contains the target."
            )
        names = source.all_column_names()
        if args.target not in names:
            raise UsageError(
                f"Target column {args.target!r} not found in the input, which has columns {names}."
            )
    wrapper = _wrapper(model, args, scoring=scoring)
    try:
        # The target column is read with the features of each block, once.
        value = wrapper.score(source, args.target)
    except ValueError as exc:
        if "scoring" in str(exc).lower() or "scorer" in str(exc).lower():
            raise UsageError(str(exc)) from exc
        raise
    if isinstance(value, dict):
        for name, number in value.items():
            print(f"{name} {_format_score(number)}")
    else:
        print(f"{scoring or 'score'} {_format_score(value)}")
    return EXIT_OK


def _format_score(value) -> str:
    """Return a score with all its significant digits, as Python prints a float."""
    values = np.asarray(value, dtype=float)
    if values.ndim == 0:
        return repr(float(values))
    return " ".join(repr(float(v)) for v in values.ravel())


# Subcommands ----------------------------------------------------------------------


def _add_predict_parser(subparsers):
    parser = subparsers.add_parser(
        "predict",
        help="score input files with a saved model and write the output to files",
        description="Score input files block by block and write one output part per "
        "block; rerun with --resume to continue an interrupted run.",
    )
    _add_model_argument(parser)
    _add_input_arguments(parser)
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output path: a path ending in .csv, .npy or .zarr writes that format; any "
        "other path is written as a directory of Parquet part files",
    )
    parser.add_argument(
        "--method", default="predict", choices=METHODS, help="method to run (default: predict)"
    )
    parser.add_argument(
        "--keep-columns",
        type=_column_list,
        metavar="A,B",
        help="comma-separated input columns (such as ids) written next to the output",
    )
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument(
        "--resume", action="store_true", help="continue an unfinished run on the same output"
    )
    existing.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output: a CSV, .npy or Zarr file (when the run finishes), "
        "or a Parquet folder that postfit wrote (when the run starts)",
    )
    _add_run_arguments(parser)
    parser.set_defaults(handler=_run_predict)


def _add_score_parser(subparsers):
    parser = subparsers.add_parser(
        "score",
        help="compute metrics of a saved model on input files that hold the target",
        description="Print one line per metric: its name and value.",
    )
    _add_model_argument(parser)
    _add_input_arguments(parser)
    parser.add_argument(
        "--target",
        help="input column that contains the target (needed unless the model's own score "
        "takes no target, as a clusterer's does)",
    )
    parser.add_argument(
        "--scoring",
        type=_column_list,
        metavar="NAME,NAME",
        help="comma-separated scikit-learn scorer names, such as accuracy,roc_auc "
        "(default: accuracy for classifiers, r2 for regressors, else the model's own score)",
    )
    _add_run_arguments(parser)
    parser.set_defaults(handler=_run_score)


def _add_info_parser(subparsers):
    parser = subparsers.add_parser(
        "info",
        help="describe a saved model: estimator, features, classes, methods, output columns",
    )
    _add_model_argument(parser)
    parser.set_defaults(handler=_run_info)


def _run_info(args):
    from ._models import describe_model

    model = _load_model(args)
    if not hasattr(model, "fit") and not any(hasattr(model, m) for m in METHODS):
        raise UsageError(
            f"The model file {args.model} contains an object of type {type(model).__name__}, "
            "which is not an estimator. Save a scikit-learn estimator in it, for example "
            "with postfit.save_model(estimator, path)."
        )
    print(describe_model(model))
    return EXIT_OK


def _add_fit_parser(subparsers):
    from ._cli_fit import add_fit_parser

    add_fit_parser(subparsers)


#: Functions that each add one subcommand; see the module docstring.
SUBCOMMANDS = [_add_predict_parser, _add_score_parser, _add_info_parser, _add_fit_parser]


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``postfit`` command with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="postfit",
        description="Score data far larger than a model was trained on, block by block.",
    )
    parser.add_argument("--version", action="version", version=f"postfit {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log to stderr: -v for run summaries, -vv for planning details",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_parser in SUBCOMMANDS:
        add_parser(subparsers)
    return parser


def _configure_logging(verbosity):
    if verbosity <= 0:
        return
    level = logging.INFO if verbosity == 1 else logging.DEBUG
    # Other libraries (fsspec, distributed, ...) log at their usual levels only.
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("postfit").setLevel(level)


def _describe_error(exc) -> str:
    lines = [str(exc) or type(exc).__name__]
    if isinstance(exc, PermissionError):
        lines[0] += ". Check the permissions of that path, or choose another one."
    lines.extend(getattr(exc, "__notes__", []))
    return "\n".join(lines)


def _stdout_closed() -> bool:
    """Return True when stdout is a pipe whose reader has closed it."""
    import select

    if not hasattr(select, "poll"):
        # Windows has no poll for pipes, so the error is reported as usual.
        return False
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    # On Linux, poll reports POLLERR for the write end of a pipe with no
    # reader left.
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(event & select.POLLERR for _, event in poller.poll(0))


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: the run stops as on Ctrl-C, and its workers are stopped too."""


@contextlib.contextmanager
def _sigterm_interrupts():
    """Raise :class:`Terminated` in the main thread on SIGTERM while the body runs.

    ``timeout``, systemd and Kubernetes stop a job with SIGTERM. Python's
    default action ends the process at once, which left loky's worker
    processes running for minutes. Stopping as on Ctrl-C stops them and
    releases the output's lock.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None) -> int:
    """Run the ``postfit`` command on ``argv`` (default: sys.argv[1:]); return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    # The format, not the printing, is replaced, so that code which records
    # warnings (warnings.catch_warnings(record=True)) still receives them.
    formatted = warnings.formatwarning
    warnings.formatwarning = partial(_format_warning, args.command)
    try:
        return _run(args)
    finally:
        warnings.formatwarning = formatted


def _format_warning(command, message, category, filename, lineno, line=None):
    """Return a warning as one line of the command's own, without the source line."""
    return f"postfit {command}: {category.__name__}: {message}\n"


def _resume_hint(args) -> str:
    """Return how to continue an interrupted run that writes an output, else nothing."""
    if getattr(args, "output", None) and args.command == "predict":
        return " (run the same command with --resume to continue)"
    return ""


def _run(args) -> int:
    try:
        with _sigterm_interrupts():
            return args.handler(args)
    except _usage_errors() as exc:
        print(f"postfit {args.command}: error: {_describe_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print(f"postfit {args.command}: terminated{_resume_hint(args)}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"postfit {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except Exception as exc:
        if interrupt_behind(exc) is not None:
            # Ctrl-C that another library's clean-up turned into its own error.
            logger.debug("interrupted", exc_info=True)
            print(f"postfit {args.command}: interrupted{_resume_hint(args)}", file=sys.stderr)
            return 130
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            # The reader of stdout (``head``, say) stopped reading, which is no
            # error of the run. Pointing stdout at devnull keeps the interpreter's
            # final flush from failing again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILED
        logger.debug("run failed", exc_info=True)
        print(
            f"postfit {args.command}: run failed: {type(exc).__name__}: {_describe_error(exc)}",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
