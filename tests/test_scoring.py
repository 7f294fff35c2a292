"""postfit's score against scikit-learn's own scorers on the whole data.

The oracle is ``sklearn.metrics.get_scorer(name)(estimator, X, y)`` on all
rows at once. postfit scores the same rows cut into blocks of 1 row, 7 rows
and all rows, with and without sample weights. Rows are sorted by target,
so most blocks of 7 rows contain one class. postfit must give the same
value (exactly for label metrics without weights, ``rtol=1e-12``
otherwise), raise the same error type where scikit-learn raises, and emit
the same warning categories.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import (
    load_breast_cancer,
    load_diabetes,
    load_iris,
    make_multilabel_classification,
)
from sklearn.linear_model import LogisticRegression, PoissonRegressor
from sklearn.metrics import check_scoring, get_scorer, get_scorer_names
from sklearn.tree import DecisionTreeClassifier

from postfit import ParallelPostFit
from postfit.scoring import LabelledRows, build_plan, score_block

BLOCK_SIZES = (1, 7, None)
RTOL = 1e-12


@functools.cache
def _case(name):
    """Return (fitted estimator, X, y): about 60 rows, sorted by target."""
    if name == "binary":
        X, y = load_breast_cancer(return_X_y=True)
        X = X[:, :4]
        model = LogisticRegression(max_iter=5000).fit(X, y)
        X, y = X[::9], y[::9]
    elif name == "multiclass":
        X, y = load_iris(return_X_y=True)
        model = LogisticRegression(max_iter=1000).fit(X, y)
        X, y = X[::3], y[::3]
    elif name == "regressor":
        X, y = load_diabetes(return_X_y=True)
        # A Poisson model predicts positive values, which the deviance and
        # log-error metrics need; diabetes targets are all positive.
        model = PoissonRegressor(max_iter=1000).fit(X, y)
        X, y = X[::7], y[::7]
    elif name == "clusterer":
        X, y = load_iris(return_X_y=True)
        model = KMeans(n_clusters=3, n_init=1, random_state=0).fit(X)
        X, y = X[::3], y[::3]
    elif name == "multilabel":
        X, y = make_multilabel_classification(n_samples=120, n_classes=3, random_state=0)
        model = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
        X, y = X[::2], y[::2]
    else:
        raise KeyError(name)
    order = np.argsort(y if y.ndim == 1 else y[:, 0], kind="stable")
    return model, X[order], y[order]


CASES = ("binary", "multiclass", "regressor", "clusterer", "multilabel")


def _weights(n):
    return np.random.default_rng(0).uniform(0.1, 2.0, n)


def _call(func):
    """Return (value or exception, set of warning categories) of ``func()``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            value = func()
        except Exception as exc:  # the oracle's error is part of what is compared
            value = exc
    return value, {w.category for w in caught}


def _postfit_score(model, scoring, X, y, block_size, sample_weight=None, backend="sequential"):
    wrapper = ParallelPostFit(
        model, scoring=scoring, block_size=block_size or len(X), backend=backend
    )
    if sample_weight is None:
        return wrapper.score(X, y)
    return wrapper.score(X, y, sample_weight=sample_weight)


def _applies(case, name, weighted=False):
    model, X, y = _case(case)
    kwargs = {"sample_weight": _weights(len(X))} if weighted else {}
    value, _ = _call(lambda: get_scorer(name)(model, X, y, **kwargs))
    return not isinstance(value, Exception)


def _is_exact(model, name, y, weighted):
    """Label metrics without weights are ratios of counts and must match exactly."""
    if weighted:
        return False
    spec = build_plan(model, name, y.ndim, False).specs[0]
    return spec.kind in ("confusion", "max")


def _absolute_tolerance(model, name, y):
    """R² and explained variance are ``1 - ratio``: near 0 only an absolute bound holds."""
    spec = build_plan(model, name, y.ndim, False).specs[0]
    return 1e-14 if spec.kind == "moments" else 0.0


def _check_same_score(model, name, X, y, block_size, weighted, where):
    kwargs = {"sample_weight": _weights(len(X))} if weighted else {}
    expected, expected_warnings = _call(lambda: get_scorer(name)(model, X, y, **kwargs))
    got, got_warnings = _call(lambda: _postfit_score(model, name, X, y, block_size, **kwargs))
    if isinstance(expected, Exception):
        assert isinstance(got, type(expected)), f"{where}: {got!r} vs {expected!r}"
        return
    assert not isinstance(got, Exception), f"{where}: raised {got!r}"
    assert isinstance(got, float), f"{where}: {type(got)}"
    if _is_exact(model, name, y, weighted):
        assert got == expected, where
    else:
        atol = _absolute_tolerance(model, name, y)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=atol, err_msg=where)
    assert got_warnings == expected_warnings, where


@pytest.mark.parametrize("name", get_scorer_names())
@pytest.mark.parametrize("case", CASES)
def test_scorer_matches_sklearn(case, name):
    model, X, y = _case(case)
    for weighted in (False, True):
        for block_size in BLOCK_SIZES:
            # One-row blocks cost a metric call each, so they score every
            # fourth row only (still sorted, every class present).
            rows = slice(None, None, 4) if block_size == 1 else slice(None)
            where = f"{case} {name} weighted={weighted} block_size={block_size}"
            _check_same_score(model, name, X[rows], y[rows], block_size, weighted, where)


def test_sweep_covers_every_scorer():
    """Each scorer name applies to at least one fitted case of the sweep."""
    unused = [n for n in get_scorer_names() if not any(_applies(c, n) for c in CASES)]
    assert unused == []


def test_sweep_has_single_class_blocks():
    for case in ("binary", "multiclass"):
        _, _, y = _case(case)
        blocks = [y[i : i + 7] for i in range(0, len(y), 7)]
        single = [b for b in blocks if len(np.unique(b)) == 1]
        assert len(single) >= len(blocks) // 2, case


@pytest.mark.parametrize(
    ("case", "backend"),
    [("binary", "threading"), ("multiclass", "loky"), ("regressor", "sequential")],
)
@pytest.mark.parametrize("weighted", [False, True])
def test_multimetric_list_matches_sklearn(case, backend, weighted):
    model, X, y = _case(case)
    kwargs = {"sample_weight": _weights(len(X))} if weighted else {}
    names = [n for n in get_scorer_names() if _applies(case, n, weighted)]
    with warnings.catch_warnings():
        # Zero-division warnings of some metrics are compared one by one above.
        warnings.simplefilter("ignore")
        expected = check_scoring(model, scoring=names)(model, X, y, **kwargs)
        got = _postfit_score(model, names, X, y, 9, backend=backend, **kwargs)
    assert list(got) == names
    for name in names:
        atol = _absolute_tolerance(model, name, y)
        np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=atol, err_msg=name)


# Scorers whose statistics have a size independent of the number of rows.
STREAMED_NAMES = {
    "binary": [
        "accuracy",
        "balanced_accuracy",
        "f1",
        "jaccard_weighted",
        "matthews_corrcoef",
        "positive_likelihood_ratio",
        "neg_log_loss",
        "neg_brier_score",
        "d2_log_loss_score",
        "d2_brier_score",
        "top_k_accuracy",
    ],
    "multiclass": ["precision_macro", "recall_micro", "neg_log_loss", "d2_brier_score"],
    "regressor": [
        "r2",
        "explained_variance",
        "neg_mean_squared_error",
        "neg_root_mean_squared_log_error",
        "neg_mean_absolute_percentage_error",
        "neg_mean_poisson_deviance",
        "neg_mean_gamma_deviance",
        "neg_max_error",
    ],
}
# Scorers of newer scikit-learn versions (d2_brier_score came with 1.8) are
# left out on older ones.
STREAMED_NAMES = {
    case: [name for name in names if name in get_scorer_names()]
    for case, names in STREAMED_NAMES.items()
}


@pytest.mark.parametrize("case", list(STREAMED_NAMES))
def test_decomposable_metrics_not_gathered(case):
    model, _, y = _case(case)
    plan = build_plan(model, STREAMED_NAMES[case], y.ndim, True)
    kinds = {spec.name: spec.kind for spec in plan.specs}
    assert [name for name, kind in kinds.items() if kind == "gather"] == []


def test_gathered_metrics_keep_outputs_not_x():
    """ROC AUC keeps y and the n × classes probabilities of a block, never its features."""
    X, y = load_iris(return_X_y=True)
    X = np.hstack([X, X])  # 8 features, so a kept X would not look like 3 classes
    model = LogisticRegression(max_iter=1000).fit(X, y)
    plan = build_plan(model, ["roc_auc_ovr", "neg_median_absolute_error"], 1, False)
    rows = LabelledRows(X[:20], y[:20])
    stats = score_block(model, rows, plan.specs)
    ((y_part, proba, weights),) = stats["roc_auc_ovr"]
    assert y_part.shape == (20,)
    assert proba.shape == (20, 3)
    assert weights is None
    ((y_part, labels, _),) = stats["neg_median_absolute_error"]
    assert labels.shape == (20,)
