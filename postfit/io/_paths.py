"""Expand what a user passes as input (path, glob, list, directory, URL) into files.

fsspec resolves every path and URL, so local paths, ``file://`` and
``memory://`` work here and ``s3://`` or ``gs://`` work where their fsspec
driver is installed.
"""

from __future__ import annotations

import fnmatch
import os
import warnings

import fsspec

from ..exceptions import PostfitWarning

__all__ = [
    "expand_paths",
    "file_fingerprint",
    "is_in_process_filesystem",
    "is_local",
    "to_url",
]

_GLOB_CHARS = ("*", "?", "[")


def _as_strings(path) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    if isinstance(path, (list, tuple)) and path:
        items = []
        for item in path:
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(
                    f"Expected a path or URL, got {type(item).__name__} {item!r} in the list "
                    "of inputs. Pass strings or os.PathLike objects."
                )
            items.append(os.fspath(item))
        return items
    raise TypeError(
        f"Expected a path, a glob, a directory, a URL or a non-empty list of them, got {path!r}."
    )


def _is_hidden(path: str) -> bool:
    # Spark, Dask and pyarrow write metadata next to data as _SUCCESS,
    # _metadata or .crc files; postfit writes _postfit_* records.
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith(("_", "."))


def _in_hidden_folder(path: str, root: str) -> bool:
    # Spark stages unfinished parts under _temporary/, and editors keep copies
    # under folders such as .ipynb_checkpoints/. Reading them would add rows.
    if not path.startswith(root + "/"):
        return False
    folders = path[len(root) + 1 :].split("/")[:-1]
    return any(name.startswith(("_", ".")) for name in folders)


def expand_paths(path, suffixes=(), what="file"):
    """Return ``(filesystem, paths)`` for a path, glob, directory, URL or list of them.

    Globs and directories expand to their files in sorted order, skipping
    hidden files (names starting with ``_`` or ``.``) and, in directories,
    files in hidden folders and files without one of ``suffixes``. Every input must be on the same
    filesystem.

    Raises
    ------
    FileNotFoundError
        When a path does not exist or a glob or directory matches no file.
    """
    filesystem = None
    files: list[str] = []
    for item in _as_strings(path):
        fs, fs_path = fsspec.core.url_to_fs(item)
        if filesystem is None:
            filesystem = fs
        elif fs.protocol != filesystem.protocol:
            raise ValueError(
                f"All inputs must be on one filesystem, but {item!r} uses {fs.protocol!r} "
                f"and the first input uses {filesystem.protocol!r}."
            )
        files.extend(_expand_one(fs, item, fs_path, suffixes, what))
    return filesystem, files


def check_output_folder(path, display_name=None) -> None:
    """Raise when the local folder of the output ``path`` is missing, a file or not writable.

    This runs before any work, so that a run does not score its input and
    then fail to write.
    """
    display_name = display_name or path
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise NotADirectoryError(
            f"The output {display_name!r} is inside {parent!r}, which is a file, not a folder. "
            "Choose an output path in a folder."
        )
    if not os.path.isdir(parent):
        raise FileNotFoundError(
            f"The directory {parent!r} of the output {display_name!r} does not exist. "
            "Create it first, or check the output path."
        )
    # access() also reports a read-only filesystem, even to root.
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Cannot write the output {display_name!r}: its folder {parent!r} is not writable "
            "(a read-only filesystem, or no write permission)"
        )


def files_of_folders(path, suffixes=()) -> list[str]:
    """Return ``path`` with each folder replaced by its visible files of the format.

    For a format given explicitly (``--input-format``): a folder's files
    with one of ``suffixes``, or all of its visible files when none has one,
    as in Hive tables (``000000_0``). There, any other file (a README) must
    be removed or hidden with a leading ``_`` or ``.``.
    """
    items = []
    for item in _as_strings(path):
        fs, fs_path = fsspec.core.url_to_fs(item)
        if any(char in fs_path for char in _GLOB_CHARS) or not fs.isdir(fs_path):
            items.append(item)
            continue
        root = fs._strip_protocol(fs_path).rstrip("/")
        found = sorted(
            p for p in fs.find(fs_path) if not _is_hidden(p) and not _in_hidden_folder(p, root)
        )
        if not found:
            raise FileNotFoundError(f"The directory {item!r} contains no visible file.")
        named = [p for p in found if suffixes and p.lower().endswith(tuple(suffixes))]
        items.extend(to_url(fs, p) for p in (named or found))
    return items


def input_patterns(fs, path) -> list[str]:
    """Return the inputs of ``path`` as paths on ``fs``: files, folders and glob patterns."""
    return [fs._strip_protocol(item).rstrip("/") for item in _as_strings(path)]


def could_be_read_as_input(fs, pattern, path, suffixes=(), folder=True) -> bool:
    """Return True when a later read of the input ``pattern`` could read ``path`` or its files.

    A folder input reads every visible file under it that ends in one of
    ``suffixes`` (any file when empty). A glob pattern reads the paths that
    match it, and its ``*`` stays within one folder level (as in fsspec)
    unless the pattern has ``**``. ``folder`` is True for an output that is
    a folder of Parquet parts, and False for one file.
    """
    path = path.rstrip("/")
    # A folder output (Parquet) is read through its part files, a file output as itself.
    written = (path, f"{path}/part-000000.parquet") if folder else (path,)
    if any(char in pattern for char in _GLOB_CHARS):
        # A glob skips matches whose own name is hidden.
        candidates = [c for c in written if not _is_hidden(c)]
        if "**" in pattern:
            return any(fnmatch.fnmatchcase(c, pattern) for c in candidates)
        rules = pattern.split("/")
        for candidate in candidates:
            parts = candidate.split("/")
            if len(parts) == len(rules) and all(
                fnmatch.fnmatchcase(part, rule) for part, rule in zip(parts, rules, strict=True)
            ):
                return True
        return False
    if not path.startswith(pattern + "/") or not fs.isdir(pattern):
        return False
    # A folder skips hidden files, files in hidden folders and files of other formats.
    for candidate in written:
        relative = candidate[len(pattern) + 1 :].split("/")
        hidden = any(part.startswith(("_", ".")) for part in relative)
        if not hidden and (not suffixes or candidate.lower().endswith(tuple(suffixes))):
            return True
    return False


def _expand_one(fs, item, fs_path, suffixes, what):
    if any(char in fs_path for char in _GLOB_CHARS):
        matches = sorted(p for p in fs.glob(fs_path) if not _is_hidden(p))
        if not matches:
            raise FileNotFoundError(f"No {what} matches the pattern {item!r}.")
        return matches
    if not fs.exists(fs_path):
        raise FileNotFoundError(f"Input {what} not found: {item!r}. Check the path.")
    if not fs.isdir(fs_path):
        return [fs_path]
    root = fs._strip_protocol(fs_path).rstrip("/")
    visible = [p for p in fs.find(fs_path) if not _is_hidden(p) and not _in_hidden_folder(p, root)]
    found = sorted(p for p in visible if not suffixes or p.lower().endswith(tuple(suffixes)))
    chosen = set(found)
    others = sorted(
        p for p in visible if p not in chosen and p.lower().endswith(tuple(DATA_SUFFIXES))
    )
    if not found:
        wanted = f" ending in {', '.join(suffixes)}" if suffixes else ""
        hint = f" It contains {_describe_files(others)}: {_reader_hint(others)}." if others else ""
        raise FileNotFoundError(f"The directory {item!r} contains no {what}{wanted}.{hint}")
    if others:
        warnings.warn(
            f"The directory {item!r} also contains {_describe_files(others)}, which postfit "
            f"skips because it reads {what}s here: {_reader_hint(others)}.",
            PostfitWarning,
            stacklevel=4,
        )
    return found


#: File endings of the data formats that postfit reads, with the reader of each.
DATA_SUFFIXES = {
    ".parquet": ("read_parquet", "parquet"),
    ".pq": ("read_parquet", "parquet"),
    ".csv": ("read_csv", "csv"),
    ".tsv": ("read_csv", "csv"),
    ".npy": ("read_npy", "npy"),
}


def _describe_files(paths, limit=3) -> str:
    names = [os.path.basename(p) for p in paths[:limit]]
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    noun = "file" if len(paths) == 1 else "files"
    return f"{len(paths)} other {noun} ({', '.join(names)}{more})"


def _reader_hint(paths) -> str:
    """Return how to read ``paths`` instead: the Python reader and the command-line option."""
    ending = next(s for s in DATA_SUFFIXES if paths[0].lower().endswith(s))
    reader, fmt = DATA_SUFFIXES[ending]
    return f"read them with postfit.{reader}, or --input-format {fmt} on the command line"


def to_url(fs, path: str) -> str:
    """Return a string that fsspec and Zarr resolve back to ``path`` on ``fs``."""
    if is_local(fs):
        return path
    return fs.unstrip_protocol(path)


def is_local(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


def is_in_process_filesystem(fs) -> bool:
    """Return True for filesystems that exist only inside the current process (``memory://``)."""
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "memory" in protocol


def file_fingerprint(fs, path: str) -> dict:
    """Return what identifies a file's version: its path, size and change time or ETag."""
    info = fs.info(path)
    fingerprint = {"path": path, "size": info.get("size")}
    for key in ("mtime", "LastModified", "ETag", "etag", "md5Hash", "created"):
        if key in info:
            fingerprint[key] = str(info[key])
            break
    return fingerprint
