"""Attach the failing block to errors raised while scoring it."""

from __future__ import annotations

import contextlib

from .exceptions import WorkerCrashedError

# Errors from process pools that mean a worker process died, not that the
# estimator raised. Filled lazily so that loky is not imported at start-up.
_CRASH_TYPES: tuple[type[BaseException], ...] | None = None


def _crash_types():
    global _CRASH_TYPES
    if _CRASH_TYPES is None:
        from concurrent.futures.process import BrokenProcessPool

        types = [BrokenProcessPool]
        try:
            from joblib.externals.loky.process_executor import TerminatedWorkerError

            types.append(TerminatedWorkerError)
        except ImportError:  # pragma: no cover - joblib always ships loky
            pass
        _CRASH_TYPES = tuple(types)
    return _CRASH_TYPES


def add_note(exc: BaseException, note: str) -> None:
    """Add a PEP 678 note, also on Python 3.10 where ``add_note`` is missing."""
    notes = getattr(exc, "__notes__", None)
    if notes is None:
        notes = []
        exc.__notes__ = notes
    if note not in notes:
        notes.append(note)


@contextlib.contextmanager
def attach_block(block):
    """Name ``block`` in any exception raised inside the context.

    The estimator's own exception keeps its type, so ``except ValueError``
    still catches a ValueError raised by ``predict``; the block and its row
    range are added as a note. A dead worker process becomes a
    :class:`~postfit.exceptions.WorkerCrashedError` naming the block.
    """
    try:
        yield
    except _crash_types() as exc:
        raise WorkerCrashedError(
            f"A worker process died while scoring {block.describe()} or another block "
            f"in flight at the same time ({exc}). The pool fails every pending block when "
            "one worker dies, so the block named may not be the one that killed it. "
            "Nothing was returned or marked complete. A worker that dies is often "
            "out of memory: lower memory_budget or block_size, or use fewer workers."
        ) from exc
    except Exception as exc:
        add_note(exc, f"postfit: raised while scoring {block.describe()}")
        raise


def interrupt_behind(exc: BaseException) -> KeyboardInterrupt | None:
    """Return the KeyboardInterrupt that ``exc`` was raised while handling, if any.

    A Ctrl-C that lands while loky starts a worker process can surface as
    another error (an ``UnboundLocalError`` from loky's own clean-up code)
    whose context is the interrupt.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
