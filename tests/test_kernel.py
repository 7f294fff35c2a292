"""The per-block kernel, output assembly and output metadata."""

from __future__ import annotations

import concurrent.futures as cf
import pickle
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, PowerTransformer
from threadpoolctl import threadpool_info

from postfit import ParallelPostFit, _kernel
from postfit._blocks import PLACED, EmptyOutput, OutputCollector, empty_like
from postfit._kernel import Block, ModelRef, pickle_model, resolve_model, run_block
from postfit._meta import infer_meta
from postfit.exceptions import BlockError


class MustNotBeCalled(BaseEstimator):
    def predict(self, X):
        raise AssertionError("the kernel called the model on an empty block")


class RowIndex(RegressorMixin, BaseEstimator):
    """Predicts the first feature, sleeping a random time per call to shuffle completion."""

    def __init__(self, max_sleep=0.0, seed=0):
        self.max_sleep = max_sleep
        self.seed = seed

    def fit(self, X, y=None):
        self.n_features_in_ = np.shape(X)[1]
        self.rng_ = random.Random(self.seed)
        self.lock_ = threading.Lock()
        self.finished_ = []
        return self

    def predict(self, X):
        with self.lock_:
            delay = self.rng_.uniform(0, self.max_sleep)
        time.sleep(delay)
        X = np.asarray(X)
        with self.lock_:
            self.finished_.append(X[0, 0])
        return X[:, 0].copy()


# The kernel -------------------------------------------------------------------


@pytest.mark.parametrize(
    "empty", [np.zeros((0, 3)), pd.DataFrame({"a": []}), sp.csr_matrix((0, 3)), []]
)
def test_empty_block_skips_model(empty):
    out = run_block(MustNotBeCalled(), "predict", Block(0, 0, 0, empty))
    assert out == EmptyOutput()


def test_empty_block_goes_to_sink():
    class Sink:
        def write(self, block, out):
            return ("written", block.index, out)

    receipt = run_block(MustNotBeCalled(), "predict", Block(4, 8, 8, np.zeros((0, 2))), sink=Sink())
    assert receipt == ("written", 4, EmptyOutput())


def test_row_count_mismatch_names_both_counts():
    class Short(BaseEstimator):
        def predict(self, X):
            return np.zeros(len(X) + 2)

    with pytest.raises(
        BlockError, match=r"returned 7 rows for block 3 \(rows 10 to 15\), which has 5"
    ):
        run_block(Short(), "predict", Block(3, 10, 15, np.zeros((5, 2))))


def test_callable_method_result_returned_as_is():
    def count(estimator, rows, offset=0):
        return {"rows": len(rows) + offset}

    out = run_block(None, count, Block(0, 0, 4, np.zeros((4, 1))), kwargs={"offset": 1})
    assert out == {"rows": 5}


def test_sink_receives_output():
    class Sink:
        def write(self, block, out):
            return float(out.sum())

    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    receipt = run_block(model, "predict", Block(0, 0, 4, np.eye(4)), sink=Sink())
    assert receipt == 2.0


def test_inner_thread_limit_applies_inside_call():
    def pools(estimator, rows):
        return {(p["user_api"], p["num_threads"]) for p in threadpool_info()}

    out = run_block(None, pools, Block(0, 0, 1, np.zeros((1, 1))), inner_threads=1)
    assert out, "no BLAS or OpenMP pool found"
    assert {threads for _, threads in out} == {1}


def test_loader_block_is_loaded_in_kernel():
    class Loader:
        def load(self):
            return np.arange(6.0).reshape(3, 2)

    model = LogisticRegression().fit(np.arange(6.0).reshape(3, 2), [0, 1, 1])
    out = run_block(model, "predict", Block(0, 0, 3, Loader()))
    np.testing.assert_array_equal(out, model.predict(np.arange(6.0).reshape(3, 2)))


def test_model_ref_loaded_once_per_token(tmp_path):
    import pickle

    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2]}))
    ref = ModelRef(str(path), token="token-a")
    first = resolve_model(ref)
    path.write_bytes(pickle.dumps({"weights": "changed"}))
    assert resolve_model(ref) is first
    other = ModelRef(str(path), token="token-b")
    assert resolve_model(other) == {"weights": "changed"}


def test_pickled_model_unpickled_once_per_process():
    model = LogisticRegression().fit(np.arange(6.0).reshape(3, 2), [0, 1, 1])
    pickled = pickle_model(model)
    first = resolve_model(pickled)
    assert resolve_model(pickled) is first
    # A copy of the same bytes, as a second block's task receives, hits the cache too.
    assert resolve_model(tuple(pickled)) is first
    np.testing.assert_array_equal(first.coef_, model.coef_)
    assert first is not model


def test_pickled_models_kept_are_bounded():
    models = [{"weights": number} for number in range(_kernel.PICKLED_MODELS_KEPT + 1)]
    pickled = [pickle_model(model) for model in models]
    loaded = [resolve_model(item) for item in pickled]
    assert resolve_model(pickled[-1]) is loaded[-1]
    # The oldest model was dropped, so it is unpickled again: equal, not the same object.
    again = resolve_model(pickled[0])
    assert again == models[0]
    assert again is not loaded[0]


# Output assembly --------------------------------------------------------------


OUTPUT_KINDS = {
    "numpy_1d": lambda lo, hi: np.arange(lo, hi, dtype=np.int64),
    "numpy_2d": lambda lo, hi: np.arange(lo * 3, hi * 3, dtype=np.float32).reshape(-1, 3),
    "pandas": lambda lo, hi: pd.DataFrame(
        {"x": np.arange(lo, hi, dtype=float), "y": [f"r{i}" for i in range(lo, hi)]},
        index=pd.RangeIndex(lo, hi),
    ),
    "sparse": lambda lo, hi: sp.csr_matrix(np.arange(lo * 2, hi * 2).reshape(-1, 2)),
    "polars": lambda lo, hi: pl.DataFrame({"x": np.arange(lo, hi)}),
    "multi_output": lambda lo, hi: [np.arange(lo, hi) * 1.0, np.arange(lo, hi).reshape(-1, 1)],
}


def _assert_equal_outputs(got, expected):
    assert type(got) is type(expected)
    if isinstance(expected, list):
        for g, e in zip(got, expected, strict=True):
            _assert_equal_outputs(g, e)
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected)
    elif isinstance(expected, pl.DataFrame):
        assert got.equals(expected)
    elif sp.issparse(expected):
        assert got.format == expected.format
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got.toarray(), expected.toarray())
    else:
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind", list(OUTPUT_KINDS))
def test_collector_restores_input_order_with_empty_blocks(kind):
    make = OUTPUT_KINDS[kind]
    sizes = [4, 0, 3, 5, 0, 1]
    bounds = np.cumsum([0] + sizes)
    outputs = [
        make(lo, hi) if hi > lo else EmptyOutput()
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    collector = OutputCollector(int(bounds[-1]))
    for i in [3, 1, 5, 0, 4, 2]:
        collector.add(i, int(bounds[i]), int(bounds[i + 1]), outputs[i])
    _assert_equal_outputs(collector.result(), make(0, int(bounds[-1])))


@pytest.mark.parametrize("kind", list(OUTPUT_KINDS))
def test_empty_like_keeps_type_and_width(kind):
    out = OUTPUT_KINDS[kind](0, 5)
    if isinstance(out, list):
        expected = [part[:0] for part in out]
    elif isinstance(out, pd.DataFrame):
        expected = out.iloc[:0]
    elif isinstance(out, pl.DataFrame):
        expected = out.head(0)
    else:
        expected = out[:0]
    _assert_equal_outputs(empty_like(out), expected)


def test_collector_all_empty_uses_meta():
    meta = np.empty((0, 3), dtype=np.float32)
    collector = OutputCollector(0, meta=meta)
    collector.add(0, 0, 0, EmptyOutput())
    assert collector.result() is meta


def test_collector_all_empty_without_meta_raises():
    collector = OutputCollector(0)
    collector.add(0, 0, 0, EmptyOutput())
    with pytest.raises(BlockError, match="Pass a meta"):
        collector.result()


def test_collector_rejects_changing_width():
    collector = OutputCollector(4)
    collector.add(0, 0, 2, np.zeros((2, 3)))
    collector.add(1, 2, 4, np.zeros((2, 4)))
    with pytest.raises(BlockError, match="changed shape between blocks"):
        collector.result()


def test_collector_promotes_string_width():
    collector = OutputCollector(4)
    collector.add(1, 2, 4, np.array(["a", "b"]))
    collector.add(0, 0, 2, np.array(["long", "longer"]))
    np.testing.assert_array_equal(collector.result(), ["long", "longer", "a", "b"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_in_input_order_whatever_finish_order(seed):
    X = np.arange(120.0).reshape(60, 2)
    estimator = RowIndex(max_sleep=0.005, seed=seed).fit(X)
    wrapper = ParallelPostFit(estimator, backend="threading", n_jobs=4, block_size=3)
    got = wrapper.predict(X)
    np.testing.assert_array_equal(got, X[:, 0])
    assert sorted(estimator.finished_) == list(X[::3, 0])


# Output metadata --------------------------------------------------------------


def test_meta_one_hot_categories_one_to_three():
    X = np.array([[1], [2], [3], [2]])
    encoder = OneHotEncoder(sparse_output=False).fit(X)
    meta = infer_meta(encoder, "transform", sample=X[2:])
    assert meta.shape == (0, 3)
    assert meta.dtype == np.float64


def test_meta_of_box_cox_from_real_rows():
    X = np.array([[1.0, 5.0], [2.0, 3.0], [4.0, 9.0]])
    transformer = PowerTransformer(method="box-cox").fit(X)
    meta = infer_meta(transformer, "transform", sample=X)
    assert meta.shape == (0, 2)


def test_meta_from_classes_without_rows():
    model = LogisticRegression().fit(np.eye(3), ["a", "b", "c"])
    assert infer_meta(model, "predict").dtype == model.classes_.dtype
    assert infer_meta(model, "predict_proba").shape == (0, 3)


def test_user_meta_wins():
    model = LogisticRegression().fit(np.eye(3), ["a", "b", "c"])
    meta = pd.DataFrame({"p": pd.Series([], dtype="float32")})
    assert list(infer_meta(model, "predict_proba", user_meta=meta).columns) == ["p"]
    assert infer_meta(model, "predict", user_meta="U1").dtype == np.dtype("U1")


def test_meta_without_rows_or_attributes_raises():
    transformer = PowerTransformer().fit(np.eye(3))
    with pytest.raises(ValueError, match="Pass transform_meta="):
        infer_meta(transformer, "transform")


def test_block_describes_merged_blocks():
    assert Block(3, 30, 40, None).describe() == "block 3 (rows 30 to 40)"
    assert Block(3, 30, 40, None, last_index=3).describe() == "block 3 (rows 30 to 40)"
    assert Block(3, 30, 60, None, last_index=5).describe() == "blocks 3 to 5 (rows 30 to 60)"
    assert Block(3, None, None, None, last_index=5).describe() == "blocks 3 to 5"


def test_collector_place_needs_the_array():
    collector = OutputCollector(6)
    assert not collector.place(2, 4, np.ones((2, 3)))

    collector.add(0, 0, 2, np.zeros((2, 3)))

    assert collector.place(2, 4, np.ones((2, 3)))
    assert collector.add(1, 2, 4, PLACED) is None
    collector.add(2, 4, 6, np.full((2, 3), 2.0))
    expected = np.repeat([0.0, 1.0, 2.0], 6).reshape(6, 3)
    np.testing.assert_array_equal(collector.result(), expected)


@pytest.mark.parametrize(
    "out",
    [
        np.ones((2, 3), dtype=np.float32),
        np.ones((2, 4)),
        np.ones((3, 3)),
        pd.DataFrame(np.ones((2, 3))),
        sp.csr_matrix(np.ones((2, 3))),
        EmptyOutput(),
    ],
    ids=["dtype", "width", "rows", "frame", "sparse", "empty"],
)
def test_collector_place_rejects_other_outputs(out):
    collector = OutputCollector(6)
    collector.add(0, 0, 2, np.zeros((2, 3)))
    assert not collector.place(2, 4, out)


def test_collector_place_needs_row_offsets():
    collector = OutputCollector(6)
    collector.add(0, 0, 2, np.zeros((2, 3)))
    assert not collector.place(None, None, np.ones((2, 3)))


def test_collector_promotes_while_threads_place():
    # Worker threads place int32 blocks while the calling thread adds float64
    # blocks, which replaces the array by a promoted copy: no write is lost.
    n_blocks, rows = 400, 50
    collector = OutputCollector(n_blocks * rows)
    collector.add(0, 0, rows, np.zeros((rows, 2), dtype=np.int32))

    def block(i, dtype):
        return np.full((rows, 2), i, dtype=dtype)

    def place(i):
        return collector.place(i * rows, (i + 1) * rows, block(i, np.int32))

    with cf.ThreadPoolExecutor(4) as pool:
        futures = {i: pool.submit(place, i) for i in range(1, n_blocks) if i % 50}
        for i in range(50, n_blocks, 50):
            collector.add(i, i * rows, (i + 1) * rows, block(i, np.float64) + 0.5)
        # As in a run, the calling thread adds the blocks that were not placed.
        for i, future in futures.items():
            if not future.result():
                collector.add(i, i * rows, (i + 1) * rows, block(i, np.int32))

    result = collector.result()
    expected = np.repeat(np.arange(n_blocks, dtype=np.float64), rows)
    expected[np.repeat(np.arange(n_blocks) % 50 == 0, rows)] += 0.5
    expected[:rows] = 0.0
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result[:, 0], expected)
    np.testing.assert_array_equal(result[:, 1], expected)


def test_collector_keeps_single_block_output_without_copy():
    out = np.arange(12.0).reshape(4, 3)
    collector = OutputCollector(4)
    collector.add(0, 0, 4, out)
    assert collector.result() is out


@pytest.mark.parametrize("size", [0, 1, 2**20, 5 * 2**23 + 3])
def test_content_token_sees_every_byte(size):
    payload = bytearray(random.Random(size).randbytes(size))
    token = _kernel.content_token(payload)
    assert token == _kernel.content_token(bytes(payload))
    assert token == _kernel.content_token(memoryview(payload))
    for position in {0, size // 2, 2**20, size - 1}:
        if 0 <= position < size:
            changed = bytearray(payload)
            changed[position] ^= 1
            assert _kernel.content_token(changed) != token, position
    assert _kernel.content_token(payload + b"\0") != token


def test_content_token_keeps_parts_apart():
    assert _kernel.content_token(b"ab", b"c") != _kernel.content_token(b"a", b"bc")
    big = bytes(2**20)
    first = _kernel.content_token(big + big, b"tail")
    assert first != _kernel.content_token(big, big + b"tail")
    assert first != _kernel.content_token(big, big, b"tail")
    assert _kernel.content_token(b"abc") != _kernel.content_token(b"abc", b"")
    assert _kernel.content_token(b"abc", b"") == _kernel.content_token(bytearray(b"abc"), b"")
    assert _kernel.content_token() != _kernel.content_token(b"")


def test_content_token_differs_between_processes():
    # Each process seeds its tokens, so no one can craft a model that takes
    # the token of another process's model.
    code = "from postfit import _kernel; print(_kernel.content_token(b'model'))"
    tokens = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    }
    tokens.add(_kernel.content_token(b"model"))
    assert len(tokens) == 3


class HoldsArray(RegressorMixin, BaseEstimator):
    """An estimator whose fitted state is one large array."""

    def fit(self, X, y=None):
        self.weights_ = np.arange(3 * 2**20, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        return self


@pytest.mark.parametrize("order", ["C", "F"])
def test_model_token_follows_fitted_state(order):
    model = HoldsArray().fit(np.zeros((2, 2)))
    model.weights_ = np.asarray(model.weights_.reshape(-1, 4), order=order)
    token = _kernel.model_token(model)
    assert token == _kernel.model_token(model)
    assert len(token) == 32

    model.weights_[len(model.weights_) // 2, 1] += 1.0
    changed = _kernel.model_token(model)
    assert changed != token
    model.weights_[len(model.weights_) // 2, 1] -= 1.0
    assert _kernel.model_token(model) == token

    # A strided view pickles in-band, and its values still count.
    model.weights_ = model.weights_[::2]
    strided = _kernel.model_token(model)
    assert strided != token
    model.weights_[0, 0] = -1.0
    assert _kernel.model_token(model) != strided


def test_pickle_model_carries_model_token():
    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    mark, token, payload = pickle_model(model)
    assert mark == _kernel.PICKLED_MODEL_MARK
    assert token == _kernel.model_token(model)
    np.testing.assert_array_equal(pickle.loads(payload).coef_, model.coef_)


@pytest.mark.parametrize("backend", ["sequential", "threading"])
@pytest.mark.parametrize("order", ["C", "F"])
def test_output_keeps_memory_order(backend, order):
    from sklearn.preprocessing import FunctionTransformer

    layout = np.asfortranarray if order == "F" else np.ascontiguousarray
    estimator = FunctionTransformer(lambda X: layout(X * 2.0)).fit(np.ones((2, 3)))
    X = np.arange(300.0).reshape(100, 3)
    want = estimator.transform(X)
    got = ParallelPostFit(estimator, backend=backend, block_size=7).transform(X)
    np.testing.assert_array_equal(got, want)
    assert got.flags.f_contiguous == want.flags.f_contiguous
    assert got.flags.c_contiguous == want.flags.c_contiguous
