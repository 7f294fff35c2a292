"""NumPy ``.npy`` files and Zarr arrays as sources: blocks are slices along the first axis.

Local ``.npy`` files are memory-mapped by the worker, which then reads only
its rows from the page cache; ``.npy`` files on other filesystems are read by
byte range. Zarr blocks are aligned to the array's chunks along the first
axis, so each block decompresses only its own chunks.
"""

from __future__ import annotations

import os
from functools import cached_property

import fsspec
import numpy as np

from .._kernel import Block
from ._paths import expand_paths, file_fingerprint, is_local, to_url
from ._source import ArraySchema, InvalidFileError, Source

__all__ = ["NpySource", "ZarrSource", "read_npy", "read_zarr"]


def _npy_header(fs, path):
    """Return (shape, fortran_order, dtype, data offset) from an ``.npy`` header."""
    with fs.open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as exc:
            raise InvalidFileError(f"Cannot read {path!r} as a NumPy .npy file: {exc}.") from exc
        offset = f.tell()
    if dtype.hasobject:
        raise InvalidFileError(
            f"{path!r} contains Python objects, which .npy stores as a pickle that can run "
            "code when loaded. postfit reads only numeric and string .npy files."
        )
    if len(shape) == 0:
        raise InvalidFileError(f"{path!r} contains a scalar; expected an array of rows.")
    return shape, fortran, dtype, offset


class NpyRows:
    """Rows ``start:stop`` of one ``.npy`` file."""

    def __init__(self, fs, path, start, stop, header):
        self.fs = fs
        self.path = path
        self.start = start
        self.stop = stop
        self.header = header

    def load(self):
        shape, fortran, dtype, offset = self.header
        if is_local(self.fs):
            array = np.load(self.path, mmap_mode="r")
            return np.asarray(array[self.start : self.stop])
        if fortran and len(shape) > 1:
            raise InvalidFileError(
                f"{self.path!r} is stored in Fortran order, whose rows are not contiguous; "
                "copy it to a local disk or save it in C order."
            )
        row_bytes = dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64))
        begin = offset + self.start * row_bytes
        data = self.fs.cat_file(self.path, start=begin, end=offset + self.stop * row_bytes)
        return np.frombuffer(data, dtype=dtype).reshape((self.stop - self.start, *shape[1:]))


class _ArraySource(Source):
    tabular = False

    def __init__(self, path):
        super().__init__(path, None)

    def row_nbytes(self, columns=None):
        schema = self.schema
        return max(1, schema.dtype.itemsize * int(np.prod(schema.shape[1:], dtype=np.int64)))

    def estimated_rows(self):
        return self.n_rows


class NpySource(_ArraySource):
    """One or more ``.npy`` files whose rows are stacked in order. See :func:`read_npy`."""

    format = "NumPy .npy"
    suffixes = (".npy",)

    @cached_property
    def _headers(self):
        headers = [_npy_header(self.fs, path) for path in self.paths]
        shape, _, dtype, _ = headers[0]
        for path, (other_shape, _, other_dtype, _) in zip(self.paths, headers, strict=True):
            if other_shape[1:] != shape[1:] or other_dtype != dtype:
                raise ValueError(
                    f"The .npy files {self.paths[0]!r} and {path!r} differ: shape "
                    f"{shape} of {dtype} vs {other_shape} of {other_dtype}. Rows of every "
                    "file must have the same shape and dtype."
                )
        return headers

    @property
    def schema(self):
        shape, _, dtype, _ = self._headers[0]
        return ArraySchema(dtype, (self.n_rows, *shape[1:]))

    @property
    def n_rows(self):
        return sum(header[0][0] for header in self._headers)

    def blocks(self, block_rows, features=None, keep=None, as_numpy=False):
        blocks = []
        offset = 0
        for path, header in zip(self.paths, self._headers, strict=True):
            rows = header[0][0]
            for lo in range(0, rows, block_rows):
                hi = min(rows, lo + block_rows)
                loader = NpyRows(self.fs, path, lo, hi, header)
                blocks.append(Block(len(blocks), offset + lo, offset + hi, loader))
            offset += rows
        return blocks

    def read(self):
        parts = [
            NpyRows(self.fs, path, 0, header[0][0], header).load()
            for path, header in zip(self.paths, self._headers, strict=True)
        ]
        return np.concatenate(parts, axis=0)


class ZarrRows:
    """Rows ``start:stop`` of one Zarr array."""

    def __init__(self, url, start, stop):
        self.url = url
        self.start = start
        self.stop = stop

    def load(self):
        import zarr

        return zarr.open_array(self.url, mode="r")[self.start : self.stop]


def _open_zarr(url):
    import zarr

    try:
        node = zarr.open(url, mode="r")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise InvalidFileError(f"Cannot open {url!r} as a Zarr array: {exc}.") from exc
    if not isinstance(node, zarr.Array):
        raise InvalidFileError(
            f"{url!r} is a Zarr group, not an array. Pass the path of one array inside "
            f"it, for example {url.rstrip('/')}/{next(iter(node.array_keys()), 'name')}."
        )
    return node


class ZarrSource(_ArraySource):
    """One or more Zarr arrays whose rows are stacked in order. See :func:`read_zarr`."""

    format = "Zarr"

    def __init__(self, path):
        # A Zarr array is a directory of chunk files, so a store path is the
        # input itself: only globs are expanded, never a store's contents.
        stores = list(path) if isinstance(path, (list, tuple)) else [path]
        if not stores:
            raise TypeError("Expected a Zarr array path, a glob or a non-empty list of them.")
        self.fs = None
        self.paths = []
        self.columns = None
        for store in stores:
            text = os.fspath(store)
            if any(char in text for char in "*?["):
                fs, found = expand_paths(text, what="Zarr array")
            else:
                fs, fs_path = fsspec.core.url_to_fs(text)
                if not fs.exists(fs_path):
                    raise FileNotFoundError(f"Zarr array not found: {text!r}. Check the path.")
                found = [fs_path]
            if self.fs is not None and fs.protocol != self.fs.protocol:
                raise ValueError(
                    f"All inputs must be on one filesystem, but {text!r} uses {fs.protocol!r}."
                )
            self.fs = self.fs or fs
            self.paths.extend(found)

    @cached_property
    def _arrays(self):
        arrays = [_open_zarr(to_url(self.fs, path)) for path in self.paths]
        first = arrays[0]
        for path, array in zip(self.paths, arrays, strict=True):
            if array.shape[1:] != first.shape[1:] or array.dtype != first.dtype:
                raise ValueError(
                    f"The Zarr arrays {self.paths[0]!r} and {path!r} differ: shape "
                    f"{first.shape} of {first.dtype} vs {array.shape} of {array.dtype}."
                )
        return [(array.shape, array.chunks[0], array.dtype) for array in arrays]

    @property
    def schema(self):
        shape, _, dtype = self._arrays[0]
        return ArraySchema(np.dtype(dtype), (self.n_rows, *shape[1:]))

    @property
    def n_rows(self):
        return sum(shape[0] for shape, _, _ in self._arrays)

    def blocks(self, block_rows, features=None, keep=None, as_numpy=False):
        blocks = []
        offset = 0
        for path, (shape, chunk_rows, _) in zip(self.paths, self._arrays, strict=True):
            step = max(chunk_rows, block_rows // chunk_rows * chunk_rows)
            for lo in range(0, shape[0], step):
                hi = min(shape[0], lo + step)
                loader = ZarrRows(to_url(self.fs, path), lo, hi)
                blocks.append(Block(len(blocks), offset + lo, offset + hi, loader))
            offset += shape[0]
        return blocks

    def read(self):
        parts = [
            ZarrRows(to_url(self.fs, path), 0, shape[0]).load()
            for path, (shape, _, _) in zip(self.paths, self._arrays, strict=True)
        ]
        return np.concatenate(parts, axis=0)

    def fingerprint(self):
        files = []
        for path, (shape, chunk_rows, dtype) in zip(self.paths, self._arrays, strict=True):
            entry = {"path": path, "shape": list(shape), "chunks": chunk_rows, "dtype": str(dtype)}
            for name in ("zarr.json", ".zarray"):
                if self.fs.exists(f"{path}/{name}"):
                    entry["metadata"] = file_fingerprint(self.fs, f"{path}/{name}")
            files.append(entry)
        return {"format": self.format, "columns": None, "files": files}


def read_npy(path) -> NpySource:
    """Open ``.npy`` files as a lazy source whose rows are read by slice in the workers.

    Parameters
    ----------
    path : str, path-like or list of them
        A file, a glob, a directory (its ``.npy`` files) or a list of these,
        local or fsspec URLs. The rows of several files are stacked in order;
        every file must have the same dtype and row shape.

    Returns
    -------
    source : NpySource

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> from postfit import read_npy
    >>> path = os.path.join(tempfile.mkdtemp(), "X.npy")
    >>> np.save(path, np.arange(12.0).reshape(4, 3))
    >>> source = read_npy(path)
    >>> source.n_rows, source.schema.dtype
    (4, dtype('float64'))
    """
    return NpySource(path)


def read_zarr(path) -> ZarrSource:
    """Open Zarr arrays as a lazy source whose blocks are whole chunks along the rows.

    Parameters
    ----------
    path : str, path-like or list of them
        The path or URL of a Zarr array (a store, or an array inside a
        group), a glob of them, or a list. The rows of several arrays are
        stacked in order.

    Returns
    -------
    source : ZarrSource

    Examples
    --------
    >>> import numpy as np, zarr, tempfile, os
    >>> from postfit import read_zarr
    >>> path = os.path.join(tempfile.mkdtemp(), "X.zarr")
    >>> zarr.open_array(path, mode="w", shape=(10, 2), chunks=(4, 2), dtype="f8")[:] = 1.0
    >>> read_zarr(path).n_rows
    10
    """
    return ZarrSource(path)
