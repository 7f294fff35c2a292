"""Warning and error classes raised by postfit."""

__all__ = [
    "BlockError",
    "ColumnOrderWarning",
    "MaterializedScoringWarning",
    "OutputExistsError",
    "PostfitWarning",
    "RandomPerCallWarning",
    "UntrustedModelError",
    "WorkerCrashedError",
]


class PostfitWarning(UserWarning):
    """Base class of the warnings that postfit emits."""


class ColumnOrderWarning(PostfitWarning):
    """Frame columns arrived in another order than in fit and were reordered by name."""


class MaterializedScoringWarning(PostfitWarning):
    """A scorer needs all of X at once, so X was read into memory before it was called.

    Emitted for plain callables ``scorer(estimator, X, y)`` and for an
    estimator's own ``score`` method other than accuracy or R².
    """


class RandomPerCallWarning(PostfitWarning):
    """A method draws random numbers in each call, so its output on blocks differs from one call.

    Emitted for inputs that are scored in blocks whatever the estimator: Dask
    collections, Ray Datasets and file sources.
    """


class BlockError(RuntimeError):
    """A block produced an output that breaks the row-wise contract.

    Raised, for example, when a method returns a different number of rows than
    the block it was given.
    """


class WorkerCrashedError(RuntimeError):
    """A worker process died while it scored a block.

    The message names the block and its row range. No output is marked complete
    after this error.
    """


class OutputExistsError(FileExistsError):
    """The output named for a run already exists and overwriting was not requested."""


class UntrustedModelError(ValueError):
    """A model file would run code or load types that the user did not trust."""
