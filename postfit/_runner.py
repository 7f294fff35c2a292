"""Drive a run: cut the input into blocks, plan, hand blocks to a backend, collect.

The automatic backend measures before it decides. It scores the first rows
itself on one thread to learn the time per row, then two blocks at once on
two threads to learn whether the estimator holds the GIL. Rows scored while
measuring are part of the output, so measuring costs no extra work.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import gc
import logging
import time
from dataclasses import dataclass, field
from functools import partial

import sklearn

from . import _plan, _timings
from ._blocks import (
    PLACED,
    OutputCollector,
    has_index,
    n_rows,
    sliceable_rows,
    take_rows,
)
from ._errors import attach_block
from ._kernel import (
    Block,
    call_method,
    check_output_rows,
    limit_threads,
    restore_feature_names,
    run_block,
)
from .backends import cpu_cores, effective_n_workers, get_backend

logger = logging.getLogger(__name__)

__all__ = ["RunOptions", "execute_blocks", "run_in_memory"]

#: Times that the two-thread probe times each way, keeping the shorter time.
PROBE_REPEATS = 2


def _without_garbage_collection(probe):
    """Run ``probe`` with the garbage collector paused, as ``timeit`` does.

    A full collection of a large heap took 30 to 40 ms here, longer than a
    probe block, and fell on some probes but not others: a pure-Python
    estimator, which gains nothing from threads, measured a two-thread
    speed-up of 1.7. Collections pause every thread of a run alike, so
    leaving them out of both sides of a comparison is fair.
    """

    @functools.wraps(probe)
    def paused(*args, **kwargs):
        enabled = gc.isenabled()
        gc.disable()
        try:
            return probe(*args, **kwargs)
        finally:
            if enabled:
                gc.enable()

    return paused


@dataclass(frozen=True)
class RunOptions:
    """The knobs a user sets for a run, validated by the wrapper; shared, so never changed."""

    backend: str = "auto"
    n_jobs: int | None = -1
    block_size: int | str = "auto"
    memory_budget: int | str | None = "auto"
    progress: bool = False
    backend_options: dict = field(default_factory=dict)


class _NoProgress:
    def update(self, n):
        pass

    def close(self):
        pass


def _progress_bar(total, enabled, desc, initial=0):
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="rows", unit_scale=True, desc=desc)


def execute_blocks(
    backend,
    estimator,
    method,
    blocks,
    *,
    on_result,
    max_in_flight,
    kwargs=None,
    restore_names=False,
    sink=None,
    n_cores=None,
    place=None,
):
    """Run ``method`` on every block through ``backend`` and pass results to ``on_result``.

    This is the loop shared by every source and sink: the model is shipped
    once, then blocks are scored with at most ``max_in_flight`` pending.
    ``on_result(block, result)`` runs in the calling thread, in completion
    order. On a thread backend, each worker first offers its output to
    ``place(start, stop, out)``, and the result is ``PLACED`` when taken.
    """
    n_cores = n_cores or cpu_cores()
    inner = backend.inner_threads(n_cores)
    # OpenBLAS keeps one process-wide thread count, which a worker thread's
    # own limit can undo; the driver sets it once for thread backends and
    # each worker thread limits OpenMP, whose setting is per thread.
    thread_api = "openmp" if backend.shares_gil else None
    blas_limit = inner if backend.shares_gil else None
    # Blocks run in other threads or processes, where the caller's
    # scikit-learn configuration (transform_output, ...) does not apply.
    config = None if backend.name == "sequential" else sklearn.get_config()
    with backend.ship_model(estimator) as model_ref, limit_threads(blas_limit, "blas"):
        func = partial(
            run_block,
            model_ref,
            method,
            kwargs=kwargs,
            inner_threads=inner,
            thread_api=thread_api,
            restore_names=restore_names,
            sink=sink,
            config=config,
        )
        if place is not None and backend.shares_gil:
            func = partial(_score_and_place, func, place)
        for block, result in backend.imap_unordered(func, blocks, max_in_flight):
            on_result(block, result)


def _score_and_place(score, place, block):
    out = score(block)
    return PLACED if place(block.start, block.stop, out) else out


def _iter_blocks(X, slicer, start, stop, block_size, first_index):
    index = first_index
    for lo in range(start, stop, block_size):
        hi = min(stop, lo + block_size)
        yield Block(index, lo, hi, slicer(lo, hi))
        index += 1


class _InMemoryRun:
    """One method call on one in-memory input."""

    def __init__(self, estimator, method, X, options, kwargs, restore_names, meta):
        self.estimator = estimator
        self.method = method
        self.X = X
        self.options = options
        self.kwargs = kwargs or {}
        self.restore_names = restore_names
        self.n = n_rows(X)
        self.row_nbytes = _plan.estimate_row_nbytes(X)
        self.collector = OutputCollector(self.n, X.index if has_index(X) else None, meta)
        self.next_index = 0
        self.position = 0
        self.bar = None

    # The budget and the worker count take a few hundred microseconds to
    # measure (psutil, cgroup files), so the direct path does not ask for them.

    @functools.cached_property
    def budget(self):
        return _plan.parse_memory_budget(self.options.memory_budget)

    @functools.cached_property
    def n_workers(self):
        return effective_n_workers(self.options.n_jobs)

    def add(self, block, out):
        self.collector.add(block.index, block.start, block.stop, out)
        if self.bar is not None:
            self.bar.update(block.stop - block.start)

    def score_here(self, stop, inner_threads=None):
        """Score rows ``position:stop`` in the calling thread and time it."""
        block = Block(self.next_index, self.position, stop, take_rows(self.X, self.position, stop))
        self.next_index += 1
        started = time.perf_counter()
        with attach_block(block):
            out = run_block(
                self.estimator,
                self.method,
                block,
                self.kwargs,
                inner_threads=inner_threads,
                restore_names=self.restore_names,
            )
        elapsed = time.perf_counter() - started
        self.add(block, out)
        self.position = stop
        return elapsed

    def run(self):
        self.bar = _progress_bar(self.n, self.options.progress, self.method)
        try:
            if self.options.backend == "auto":
                self.run_auto()
            else:
                self.run_backend(self.options.backend, self.n_workers, seconds_per_row=None)
        finally:
            self.bar.close()
        return self.collector.result()

    def run_auto(self):
        if self.n <= _plan.DIRECT_MAX_ROWS and self.fits_one_call(self.n):
            self.log_plan("sequential", 1, self.n, None, "direct path: small input")
            self.score_here(self.n)
            return
        if self.n <= _plan.DIRECT_MAX_ROWS or self.n_workers == 1:
            self.run_backend("sequential", 1, seconds_per_row=None)
            return

        layout = _timings.input_layout(self.X, self.method, self.kwargs)
        kept_timing = _timings.MEMORY.get(self.estimator, layout)
        started = time.perf_counter()
        if kept_timing is None:
            overhead, seconds_per_row = self.probe_one_thread()
            timing = _timings.Timing(overhead, seconds_per_row, None, time.monotonic())
            _timings.MEMORY.put(self.estimator, layout, timing)
        else:
            timing = kept_timing
            logger.debug("auto backend: timings kept from an earlier call")
        self.plan_from(timing, layout)
        if kept_timing is not None:
            elapsed = time.perf_counter() - started
            # The run may have measured the speed-up again and kept it.
            kept_timing = _timings.MEMORY.get(self.estimator, layout) or kept_timing
            if kept_timing.too_slow(self.n, elapsed):
                # Fitted again in place, or the machine became busy: measure next time.
                logger.debug("auto backend: the run took far longer than kept timings predicted")
                _timings.MEMORY.forget(self.estimator, layout)
            elif kept_timing.too_fast(self.n, elapsed, self.n_workers):
                # Measuring again would cost more than this run: a linear
                # model's probes on 10,000 rows took 10 ms, its call 0.4 ms.
                logger.debug("auto backend: the run was far faster than kept timings predicted")
                _timings.MEMORY.put(
                    self.estimator,
                    layout,
                    kept_timing.lowered_to(self.n, elapsed, self.n_workers),
                )

    def plan_from(self, timing, layout):
        """Choose a backend for the rows left from ``timing`` and score them."""
        overhead, seconds_per_row = timing.seconds_per_call, timing.seconds_per_row
        remaining = self.n - self.position
        work = seconds_per_row * remaining
        if remaining == 0:
            return
        # Every row is scored once, probes included: an estimator that changes
        # its input in place (a scaler with copy=False) changes each row once.
        if work < _plan.DIRECT_MAX_SECONDS:
            self.finish_sequential(seconds_per_row, overhead, f"{work:.3f} s of work left")
            return

        speedup = timing.two_thread_speedup
        # A low speed-up is measured again on later calls, keeping the
        # highest, because the verdict is kept for five minutes. A linear
        # model measured 0.86 right after dask-ml's multi-threaded BLAS calls
        # in the same process, and 1.46 one second later.
        short_work = work < _plan.PROCESS_MIN_SECONDS
        if short_work:
            max_checks = _plan.SPEEDUP_THREADED_CHECKS
        else:
            max_checks = _plan.SPEEDUP_PROBE_CHECKS
        recheck = (
            speedup is not None
            and timing.speedup_probes < max_checks
            and speedup < _plan.THREADS_SCALE_MIN_SPEEDUP
        )
        if recheck and short_work:
            self.explore_threads(timing, layout, overhead, seconds_per_row)
            return
        if speedup is None or recheck:
            speedup = self.keep_speedup(
                timing, layout, self.probe_two_threads(overhead, seconds_per_row)
            )
            remaining = self.n - self.position
            work = seconds_per_row * remaining
            if remaining == 0:
                return
        if work >= _plan.PROCESS_MIN_SECONDS:
            backend = "threading" if speedup >= _plan.THREADS_SCALE_MIN_SPEEDUP else "loky"
        elif speedup >= _plan.THREADS_GAIN_MIN_SPEEDUP:
            # Too little work for processes: any gain from threads is worth taking.
            backend = "threading"
        else:
            backend = "sequential"
        logger.debug(
            "auto backend: %.2e s/call + %.2e s/row, two-thread speed-up %.2f, "
            "%.2f s of work left -> %s",
            overhead,
            seconds_per_row,
            speedup,
            work,
            backend,
        )
        if backend == "sequential":
            self.finish_sequential(seconds_per_row, overhead, "threads do not scale")
            return
        self.run_backend(backend, self.n_workers, seconds_per_row, overhead)

    def explore_threads(self, timing, layout, overhead, seconds_per_row):
        """Score the rows left on threads and keep the speed-up that the run itself shows.

        Probes that follow a multi-threaded BLAS call share the cores with
        BLAS threads that still spin. A linear model's two-thread probe read
        1.0 to 1.1 within 0.05 s of such a call and about 2 after 0.2 s, so a
        run that ended with the estimator's own threads misled the next
        call's probe. A whole run on threads is timed instead, against the
        single-thread time that the kept cost per row predicts. At worst, an
        estimator that holds the GIL runs two short calls on threads.
        """
        remaining = self.n - self.position
        started = time.perf_counter()
        self.run_backend("threading", self.n_workers, seconds_per_row, overhead)
        elapsed = time.perf_counter() - started
        # Capped at the worker count: a cost per row kept too high (lowered
        # after this run) would otherwise read as a speed-up of hundreds.
        observed = min(seconds_per_row * remaining / max(elapsed, 1e-9), float(self.n_workers))
        logger.debug("auto backend: threads ran %.2f times one thread's predicted time", observed)
        self.keep_speedup(timing, layout, observed)

    def keep_speedup(self, timing, layout, measured):
        """Keep ``measured`` or the higher speed-up already in ``timing``, and return it."""
        if timing.two_thread_speedup is not None:
            measured = max(timing.two_thread_speedup, measured)
        updated = dataclasses.replace(
            timing, two_thread_speedup=measured, speedup_probes=timing.speedup_probes + 1
        )
        _timings.MEMORY.put(self.estimator, layout, updated)
        return measured

    def block_size_limit(self):
        """Return the user's block size, or None when it is automatic."""
        block_size = self.options.block_size
        return None if block_size == "auto" else block_size

    def fits_one_call(self, rows):
        """Return whether ``rows`` rows may be scored in one call within the user's limits."""
        limit = self.block_size_limit()
        if limit is not None and rows > limit:
            return False
        needed = rows * self.row_nbytes * _plan.BLOCK_MEMORY_FACTOR
        if _plan.is_auto_budget(self.options.memory_budget) and needed <= _plan.AUTO_BUDGET_MIN:
            # The automatic budget is never below AUTO_BUDGET_MIN.
            return True
        return needed <= self.budget

    def finish_sequential(self, seconds_per_row, overhead, reason):
        """Score the remaining rows in this thread, with the estimator's own threading."""
        remaining = self.n - self.position
        if self.fits_one_call(remaining):
            self.log_plan("sequential", 1, remaining, None, reason)
            self.score_here(self.n)
            return
        self.run_backend("sequential", 1, seconds_per_row, overhead)

    @_without_garbage_collection
    def probe_one_thread(self):
        """Time growing first blocks on one thread; return (seconds per call, seconds per row).

        Many estimators pay a fixed cost per call (a forest walks its trees
        through joblib even with n_jobs=1), so the time of a call is fitted
        as ``overhead + rows * per_row`` from the last two probes. Probe
        blocks never exceed the user's block size.
        """
        limit = self.block_size_limit() or self.n
        rows = min(max(128, self.n // _plan.PROBE_FIRST_SHARE), limit)
        timings = []
        while True:
            start = self.position
            stop = min(self.n, start + rows)
            timings.append((stop - start, self.score_here(stop, inner_threads=1)))
            overhead, per_row = _fit_call_time(timings)
            # A first call can pay one-time costs (imports, caches), which the
            # fit reads as a fixed cost per call. When that cost is most of the
            # last probe, probe once more so that the last two are fitted alone.
            suspect = len(timings) == 2 and overhead > 0.5 * timings[-1][1]
            long_enough = (
                not suspect and len(timings) >= 2 and timings[-1][1] >= _plan.PROBE_MIN_SECONDS
            )
            # Two probes separate the cost per row from the call's fixed cost,
            # so the work left is estimated without the latter.
            cheap = not suspect and per_row * (self.n - stop) < _plan.DIRECT_MAX_SECONDS
            if long_enough or cheap or stop >= self.n // 8 or stop >= self.n or rows >= limit:
                break
            rows = min(rows * 4, limit)
        return _fit_call_time(timings)

    @_without_garbage_collection
    def probe_two_threads(self, overhead, per_row):
        """Return the speed-up of two threads over one, from blocks scored both ways.

        Blocks run one at a time on this thread, then two at a time on two
        threads, and the speed-up compares the measured times rather than a
        fitted cost model. A one-time cost that the fit read as a fixed cost
        per call had made a pure-Python estimator look as if it ran faster on
        two threads. Each way is timed twice and the shorter time kept, since
        one garbage collection can take longer than a probe block.
        """
        # The fixed cost of a call may not scale (a histogram model's was
        # 12 ms), so it is kept to a quarter of a probe block at most.
        seconds = max(2 * _plan.PROBE_MIN_SECONDS, 4 * overhead)
        rows = max(1, int(seconds / per_row))
        rows = min(rows, (self.n - self.position) // 8, self.block_size_limit() or self.n)
        if rows < 1:
            return 1.0
        one_thread = min(
            self.score_here(self.position + rows, inner_threads=1) for _ in range(PROBE_REPEATS)
        )
        func = partial(
            run_block,
            self.estimator,
            self.method,
            kwargs=self.kwargs,
            inner_threads=1,
            thread_api="openmp",
            restore_names=self.restore_names,
            config=sklearn.get_config(),
        )
        two_threads = float("inf")
        with limit_threads(1, "blas"), cf.ThreadPoolExecutor(2) as pool:
            for _ in range(PROBE_REPEATS):
                blocks = []
                for _ in range(2):
                    lo = self.position
                    rows_taken = take_rows(self.X, lo, lo + rows)
                    blocks.append(Block(self.next_index, lo, lo + rows, rows_taken))
                    self.next_index += 1
                    self.position = lo + rows
                started = time.perf_counter()
                futures = [pool.submit(func, block) for block in blocks]
                outputs = []
                for block, future in zip(blocks, futures, strict=True):
                    with attach_block(block):
                        outputs.append(future.result())
                two_threads = min(two_threads, time.perf_counter() - started)
                for block, out in zip(blocks, outputs, strict=True):
                    self.add(block, out)
        return 2 * one_thread / max(two_threads, 1e-9)

    def run_backend(self, name, n_workers, seconds_per_row, overhead=0.0):
        backend = get_backend(name)(n_workers, **self.options.backend_options)
        n_workers = backend.n_workers
        remaining = self.n - self.position
        block_size = self.options.block_size
        if block_size == "auto":
            block_size = _plan.choose_block_size(
                remaining,
                self.row_nbytes,
                n_workers,
                self.budget,
                seconds_per_row,
                overhead,
                calls_overlap=name != "threading",
            )
        in_flight = _plan.max_in_flight(block_size, self.row_nbytes, n_workers, self.budget)
        self.log_plan(name, n_workers, block_size, in_flight, "")
        try:
            with backend.ship_input(self.X) as slicer:
                blocks = _iter_blocks(
                    self.X, slicer, self.position, self.n, block_size, self.next_index
                )
                execute_blocks(
                    backend,
                    self.estimator,
                    self.method,
                    blocks,
                    on_result=self.add,
                    max_in_flight=in_flight,
                    kwargs=self.kwargs,
                    restore_names=self.restore_names,
                    place=self.collector.place,
                )
        finally:
            backend.close()

    def log_plan(self, backend, n_workers, block_size, in_flight, reason):
        logger.debug(
            "%s on %d rows: backend=%s workers=%d block_size=%d in_flight=%s %s",
            self.method,
            self.n,
            backend,
            n_workers,
            block_size,
            in_flight,
            reason,
        )


def _fit_call_time(timings):
    """Fit ``seconds = overhead + rows * per_row`` to the last two (rows, seconds) probes."""
    rows_last, seconds_last = timings[-1]
    if len(timings) >= 2 and timings[-2][0] != rows_last:
        rows_prev, seconds_prev = timings[-2]
        per_row = (seconds_last - seconds_prev) / (rows_last - rows_prev)
        overhead = seconds_last - per_row * rows_last
        if per_row > 0 and overhead >= 0:
            return overhead, per_row
    return 0.0, max(seconds_last, 1e-9) / rows_last


def direct_for_small_inputs(options) -> bool:
    """Return whether every NumPy input of at most ``DIRECT_MAX_ROWS`` rows takes the direct path.

    The knobs that :func:`_takes_direct_path` checks allow it for any such
    input: the automatic backend, block size and memory budget, and no
    progress bar.
    """
    return (
        options.backend == "auto"
        and not options.progress
        and options.block_size == "auto"
        and _plan.is_auto_budget(options.memory_budget)
    )


def _takes_direct_path(X, rows, options) -> bool:
    """Return whether a small input is scored in one plain call, with no run set up.

    The automatic backend gains nothing from blocks on at most
    ``DIRECT_MAX_ROWS`` rows, and a plain call keeps the wrapper within a
    few microseconds of the estimator there. The memory budget is checked
    only when the user set one, because the automatic budget is never below
    ``AUTO_BUDGET_MIN``, far above such an input.
    """
    if options.backend != "auto" or options.progress or rows > _plan.DIRECT_MAX_ROWS:
        return False
    if isinstance(options.block_size, int) and options.block_size < rows:
        return False
    if _plan.is_auto_budget(options.memory_budget):
        return True
    needed = rows * _plan.estimate_row_nbytes(X) * _plan.BLOCK_MEMORY_FACTOR
    return needed <= _plan.parse_memory_budget(options.memory_budget)


def _run_direct(estimator, method, X, rows, kwargs, restore_names):
    """Score all of a small in-memory X in one call in this thread, as the kernel would."""
    if restore_names:
        X = restore_feature_names(estimator, X, 0)
    return check_direct_rows(estimator, method, call_method(estimator, method, X, kwargs), rows)


def _estimator_parts(estimator) -> list:
    """Return ``estimator``, every estimator among its parameters, and its fitted inner ones.

    Parameters hold the templates that a meta-estimator clones. The fitted
    clones (a search's ``best_estimator_``, a one-vs-rest's ``estimators_``)
    are added too, as a search may have picked other settings.
    """
    from .wrappers import _nested_estimators

    parts = _nested_estimators(estimator)
    for part in list(parts):
        for name in ("best_estimator_", "estimator_", "estimators_"):
            value = getattr(part, name, None)
            values = value if isinstance(value, list) else [value]
            parts.extend(item for item in values if hasattr(item, "fit"))
    return parts


def _random_part(estimator, method):
    """Return the part of ``estimator`` whose ``method`` draws random numbers per call, or None."""
    from sklearn.dummy import DummyClassifier
    from sklearn.neural_network import BernoulliRBM

    for part in _estimator_parts(estimator):
        random_dummy = isinstance(part, DummyClassifier) and part.strategy in (
            "stratified",
            "uniform",
        )
        # Meta-estimators (voting, one-vs-rest, searches) call it from any method but these.
        if random_dummy and method not in ("transform", "score_samples"):
            return part
        if isinstance(part, BernoulliRBM) and method == "score_samples":
            return part
    return None


def draws_per_call(estimator, method) -> bool:
    """Return True when ``method`` draws new random numbers in each call.

    ``DummyClassifier(strategy="stratified" or "uniform")`` seeds its draws
    from ``random_state`` in each call, so blocks would repeat one pattern
    where one call gives one draw per row. ``BernoulliRBM.score_samples``
    corrupts a random feature of each row from a generator that each call
    advances. Either counts anywhere in a pipeline or meta-estimator.
    """
    return _random_part(estimator, method) is not None


def check_direct_rows(estimator, method, out, rows):
    """Return the output of a direct call, after checking that it has one row per input row."""
    where = f"{Block(0, 0, rows, None).describe()}, which has {rows} row{'' if rows == 1 else 's'}"
    check_output_rows(estimator, method, out, rows, where)
    return out


def check_local_options(options: RunOptions) -> None:
    """Raise a TypeError for ``backend_options`` that an automatic local run would ignore."""
    if options.backend == "auto" and options.backend_options:
        raise TypeError(
            f"backend_options {sorted(options.backend_options)} apply to the 'dask' and "
            "'ray' backends and to Dask and Ray inputs, but backend='auto' scores this "
            "in-memory input in this process. Pass backend='dask' or backend='ray' to run "
            "on a cluster, or remove them."
        )


def run_in_memory(
    estimator, method, X, options: RunOptions, kwargs=None, restore_names=False, meta=None
):
    """Run ``method`` of a fitted ``estimator`` on an in-memory input, block by block.

    Returns the same output as ``getattr(estimator, method)(X)``, in X's row
    order, with the type scikit-learn gives for X.
    """
    check_local_options(options)
    rows = n_rows(X)
    if rows == 0:
        # An empty input goes to the estimator as it is, so the caller gets
        # the estimator's own error or output.
        return call_method(estimator, method, X, kwargs)
    if _takes_direct_path(X, rows, options):
        return _run_direct(estimator, method, X, rows, kwargs, restore_names)
    if draws_per_call(estimator, method):
        logger.debug("%s draws random numbers in each call: one call", method)
        return _run_direct(estimator, method, X, rows, kwargs, restore_names)
    run = _InMemoryRun(estimator, method, sliceable_rows(X), options, kwargs, restore_names, meta)
    started = time.perf_counter()
    result = run.run()
    elapsed = time.perf_counter() - started
    logger.info(
        "%s: %d rows in %.3f s (%.0f rows/s)",
        method,
        run.n,
        elapsed,
        run.n / max(elapsed, 1e-9),
    )
    return result
