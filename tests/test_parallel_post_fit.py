"""ParallelPostFit against the plain estimator on in-memory inputs.

Every test compares with the wrapped estimator's own output on the whole
input (see ``_oracle.py``). When the plain estimator raises for an input, the
wrapper must raise the same exception type.

The cross product is covered in three slices to stay fast:

- every estimator, method and input kind, on threads with an uneven last block;
- every estimator and method on every in-process backend and block size,
  with a NumPy input (a frame or a Series where the estimator needs one);
- every estimator and method on loky processes, and every input kind on loky
  for one estimator. Each loky run pays for sending the model, so loky does
  not get the full product.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _oracle import (
    ARRAY_KINDS,
    CASES,
    CASES_BY_NAME,
    FRAME_KINDS,
    assert_same_output,
    call_oracle,
    fitted,
    make_input,
    methods_of,
    training_data,
)

from postfit import ParallelPostFit, _plan

#: Block size that leaves an uneven last block on 200 rows (5 × 37 + 15).
UNEVEN = 37


def kinds_for(case):
    """Return the input kinds that case's data comes in."""
    if case.data == "mixed":
        return FRAME_KINDS
    if case.data == "text":
        return ["series", "list", "object_array"]
    return ARRAY_KINDS + FRAME_KINDS


def uses_frame(case, kind):
    return case.data != "text" and kind in FRAME_KINDS


def input_for(case, kind, tmp_path, rows=None):
    """Return (fitted estimator, input X of ``kind``) for ``case``."""
    frame = uses_frame(case, kind)
    estimator = fitted(case.name, frame)
    X, _ = training_data(case, frame)
    if rows is not None:
        X = X[:rows]
    return estimator, make_input(kind, X, tmp_path)


def check_against_oracle(estimator, method, X, exact=False, **wrapper_options):
    """Assert that the wrapper's ``method`` matches the estimator's own, or its error."""
    status, expected = call_oracle(estimator, method, X)
    wrapper = ParallelPostFit(estimator, **wrapper_options)
    if status == "error":
        with pytest.raises(expected):
            getattr(wrapper, method)(X)
        return
    got = getattr(wrapper, method)(X)
    assert_same_output(got, expected, exact=exact)
    return got


def _params(kinds_of):
    params = []
    for case in CASES:
        for method in methods_of(fitted(case.name)):
            for kind in kinds_of(case):
                params.append(
                    pytest.param(case.name, method, kind, id=f"{case.name}-{method}-{kind}")
                )
    return params


def oracle(case_name, kind, tmp_path, rows=None):
    case = CASES_BY_NAME[case_name]
    estimator, X = input_for(case, kind, tmp_path, rows)
    return estimator, X, case.exact


def test_at_least_twenty_estimators():
    assert len(CASES) >= 20


@pytest.mark.parametrize(("case_name", "method", "kind"), _params(kinds_for))
def test_oracle_input_kinds(case_name, method, kind, tmp_path):
    estimator, X, exact = oracle(case_name, kind, tmp_path)
    check_against_oracle(
        estimator, method, X, exact, backend="threading", n_jobs=2, block_size=UNEVEN
    )


def _native_kind(case):
    return {"mixed": ["pandas"], "text": ["series"]}.get(case.data, ["c_order"])


BLOCK_SIZES = {
    # block size -> rows of input: one-row blocks on a short input keep the test fast.
    "one_row": (1, 12),
    "uneven": (UNEVEN, None),
    "single_block": (10_000, None),
}


@pytest.mark.parametrize("block", list(BLOCK_SIZES))
@pytest.mark.parametrize("backend", ["sequential", "threading", "auto"])
@pytest.mark.parametrize(("case_name", "method", "kind"), _params(_native_kind))
def test_oracle_backends_and_block_sizes(case_name, method, kind, backend, block, tmp_path):
    block_size, rows = BLOCK_SIZES[block]
    estimator, X, exact = oracle(case_name, kind, tmp_path, rows)
    check_against_oracle(
        estimator, method, X, exact, backend=backend, n_jobs=2, block_size=block_size
    )


@pytest.fixture(params=["auto_threads", "auto_processes", "auto_sequential"])
def forced_auto_plan(request, monkeypatch):
    """Make the automatic backend measure and then take a given path on small inputs.

    The thresholds are patched so that the test does not depend on timing.
    """
    monkeypatch.setattr(_plan, "DIRECT_MAX_ROWS", 0)
    monkeypatch.setattr(_plan, "DIRECT_MAX_SECONDS", 0.0)
    threads_limit = 0.0 if request.param == "auto_threads" else float("inf")
    monkeypatch.setattr(_plan, "THREADS_SCALE_MIN_SPEEDUP", threads_limit)
    monkeypatch.setattr(_plan, "THREADS_GAIN_MIN_SPEEDUP", threads_limit)
    limit = 0.0 if request.param == "auto_processes" else float("inf")
    monkeypatch.setattr(_plan, "PROCESS_MIN_SECONDS", limit)
    return request.param


@pytest.mark.parametrize("case_name", ["logistic", "forest", "columns_pipeline", "one_hot"])
def test_oracle_auto_after_measuring(case_name, forced_auto_plan, tmp_path):
    case = CASES_BY_NAME[case_name]
    kind = _native_kind(case)[0]
    estimator, X, exact = oracle(case_name, kind, tmp_path)
    for method in methods_of(estimator):
        check_against_oracle(estimator, method, X, exact, n_jobs=2)


@pytest.mark.parametrize(("case_name", "method", "kind"), _params(_native_kind))
def test_oracle_loky(case_name, method, kind, tmp_path):
    estimator, X, exact = oracle(case_name, kind, tmp_path)
    check_against_oracle(estimator, method, X, exact, backend="loky", n_jobs=2, block_size=UNEVEN)


@pytest.mark.parametrize("kind", ARRAY_KINDS + FRAME_KINDS)
def test_oracle_loky_input_kinds(kind, tmp_path):
    estimator, X, exact = oracle("logistic", kind, tmp_path)
    for method in methods_of(estimator):
        check_against_oracle(
            estimator, method, X, exact, backend="loky", n_jobs=2, block_size=UNEVEN
        )


def test_oracle_loky_one_row_blocks(tmp_path):
    estimator, X, exact = oracle("hist_gradient_boosting", "c_order", tmp_path, rows=30)
    check_against_oracle(
        estimator, "predict_proba", X, exact, backend="loky", n_jobs=2, block_size=1
    )


# set_output ------------------------------------------------------------------

TRANSFORMERS = ["standard_scaler", "pca", "one_hot_dense", "box_cox", "function_transformer"]


@pytest.mark.parametrize("backend", ["sequential", "threading", "loky"])
@pytest.mark.parametrize("kind", ["c_order", "pandas"])
@pytest.mark.parametrize("output", ["pandas", "polars"])
@pytest.mark.parametrize("case_name", TRANSFORMERS)
def test_set_output_honoured(case_name, output, kind, backend, tmp_path):
    case = CASES_BY_NAME[case_name]
    frame = kind == "pandas"
    estimator = fitted(case_name, frame, output)
    X, _ = training_data(case, frame)
    X = make_input(kind, X, tmp_path)
    got = check_against_oracle(
        estimator, "transform", X, backend=backend, n_jobs=2, block_size=UNEVEN
    )
    expected_type = pd.DataFrame if output == "pandas" else type(got)
    assert isinstance(got, expected_type)
    assert got.shape == (len(X), len(estimator.get_feature_names_out()))


@pytest.mark.parametrize("output", ["pandas", "polars"])
def test_set_output_on_wrapper_before_fit(output):
    X, _ = training_data(CASES_BY_NAME["standard_scaler"])
    wrapper = ParallelPostFit(
        CASES_BY_NAME["standard_scaler"].make(), backend="threading", block_size=UNEVEN
    )
    assert wrapper.set_output(transform=output) is wrapper
    wrapper.fit(X)
    expected = wrapper.estimator_.transform(X)
    assert_same_output(wrapper.transform(X), expected)
    assert type(expected).__module__.split(".")[0] == output


def test_set_output_on_wrapper_after_fit():
    X, _ = training_data(CASES_BY_NAME["standard_scaler"])
    wrapper = ParallelPostFit(CASES_BY_NAME["standard_scaler"].make()).fit(X)
    wrapper.set_output(transform="pandas")
    assert isinstance(wrapper.transform(X), pd.DataFrame)


def test_pandas_output_keeps_index_in_input_order(tmp_path):
    estimator = fitted("standard_scaler", True, "pandas")
    X, _ = training_data(CASES_BY_NAME["standard_scaler"], frame=True)
    X = make_input("pandas", X, tmp_path)
    got = ParallelPostFit(estimator, backend="threading", block_size=7).transform(X)
    assert got.index.equals(X.index)
    assert list(got.columns) == list(estimator.get_feature_names_out())
    np.testing.assert_allclose(got.to_numpy(), estimator.transform(X).to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("backend", ["sequential", "threading", "loky", "auto"])
def test_method_keyword_arguments(backend, tmp_path):
    from sklearn.linear_model import BayesianRidge

    X, y = training_data(CASES_BY_NAME["ridge"])
    estimator = BayesianRidge().fit(X, y)
    expected = estimator.predict(X, return_std=True)
    wrapper = ParallelPostFit(estimator, backend=backend, n_jobs=2, block_size=UNEVEN)
    got = wrapper.predict(X, return_std=True)
    assert isinstance(got, tuple)
    assert_same_output(got, expected)
