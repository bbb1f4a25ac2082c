"""A DataLoader whose worker processes hand calm's user errors to the main process intact.

torch's worker loop turns any exception into its formatted traceback and re-raises it in the
main process as `type(exc)(that text)`, or as a RuntimeError when the type cannot be rebuilt from
one string (VideoDecodeError takes a path and a reason). A missing video then ends a run with two
chained tracebacks and the real message on their last line, where `num_workers: 0` gives one
clean line; a caller's `except VideoDecodeError` does not even match.

`WorkerSafeLoader` closes that gap without touching the datasets: in a worker, a user error
(`calm.errors.USER_ERRORS`) raised by the dataset or the collate function is caught and sent as
the batch itself, pickled whole (`RaisedInWorker`); the loader's iterator raises it again in the
main process. The caller sees the same type, message and attributes as with 0 workers. The
worker's traceback travels as the error's `__cause__`, for `calm --debug`. Other exceptions are
bugs and keep torch's own report.
"""

from __future__ import annotations

import pickle
import traceback

from torch.utils.data import DataLoader, Dataset

from calm.errors import USER_ERRORS


class WorkerTraceback(Exception):
    """Where in a worker process the error was raised (the formatted worker traceback)."""


class RaisedInWorker:
    """A user error caught in a worker, standing in for the batch it stopped."""

    def __init__(self, error: BaseException):
        self.error = error
        self.where = "".join(traceback.format_exception(error))

    def raise_again(self):
        raise self.error from WorkerTraceback(self.where)


def _carry(error: BaseException) -> RaisedInWorker:
    """The carrier of `error`, or `error` re-raised (torch's path) when it does not pickle: an
    unpicklable batch would stall the worker's queue instead of failing."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:  # noqa: BLE001 - any failure to round-trip means torch must report it
        raise error from None
    return RaisedInWorker(error)


class _CarryingDataset(Dataset):
    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except USER_ERRORS as error:
            return _carry(error)


class _CarryingCollate:
    def __init__(self, collate_fn):
        self.collate_fn = collate_fn

    def __call__(self, items):
        for item in items:
            if isinstance(item, RaisedInWorker):
                return item
        try:
            return self.collate_fn(items)
        except USER_ERRORS as error:
            return _carry(error)


class WorkerSafeLoader(DataLoader):
    """`DataLoader(dataset, collate_fn=..., num_workers=..., **kwargs)` with user errors raised
    in the main process as themselves, whatever `num_workers` (with 0 nothing is wrapped)."""

    def __init__(self, dataset, *, collate_fn, num_workers: int = 0, **kwargs):
        if num_workers > 0:
            dataset, collate_fn = _CarryingDataset(dataset), _CarryingCollate(collate_fn)
        super().__init__(dataset, collate_fn=collate_fn, num_workers=num_workers, **kwargs)

    def __iter__(self):
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            if isinstance(batch, RaisedInWorker):
                batches = None  # stops the workers now, not when the error is freed
                batch.raise_again()
            yield batch
