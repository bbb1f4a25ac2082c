"""calm's user errors cross process boundaries as themselves: pickled whole, and raised from
DataLoader workers with the type, message and attributes they have with 0 workers."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch.utils.data import Dataset

import calm.cli.common  # noqa: F401 - defines UserError
import calm.search.store  # noqa: F401 - defines SearchIndexError
from calm.config.errors import ConfigError
from calm.data.errors import DataError, VideoDecodeError
from calm.data.worker_errors import WorkerSafeLoader, WorkerTraceback
from calm.errors import USER_ERRORS, CalmUserError
from calm.model.errors import CheckpointError

# Spawned workers: a worker forked from a test process that runs threads (left by earlier tests in
# the same xdist worker) can inherit a held lock and hang on it (seen in CI: a futex wait)
SPAWN = "spawn"


def _subclasses(cls) -> list[type]:
    return [cls] + [s for sub in cls.__subclasses__() for s in _subclasses(sub)]


def test_every_user_error_survives_pickling():
    classes = [c for c in _subclasses(CalmUserError) if c.__module__.startswith("calm.")]
    assert {ConfigError, DataError, VideoDecodeError, CheckpointError} <= set(classes)
    for cls in classes:
        error = cls("/data/a.mp4", "no video stream") if cls is VideoDecodeError else cls("msg")
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls and str(copy) == str(error) and vars(copy) == vars(error)


class Items(Dataset):
    """Item i is i, except that `bad` raises `error` (in whichever process decodes it)."""

    def __init__(self, bad: int, error: BaseException, n: int = 8):
        self.bad, self.error, self.n = bad, error, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int):
        if index == self.bad:
            raise self.error
        return torch.tensor(index)


def _stack(items):
    return torch.stack(items)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_user_error_in_a_worker_is_raised_as_itself(workers):
    loader = WorkerSafeLoader(Items(5, VideoDecodeError("/v/x.mp4", "file does not exist")),
                              batch_size=2, collate_fn=_stack, num_workers=workers,
                              multiprocessing_context=SPAWN if workers else None)
    seen = []
    with pytest.raises(VideoDecodeError) as info:
        for batch in loader:
            seen += batch.tolist()
    assert (info.value.path, info.value.reason) == ("/v/x.mp4", "file does not exist")
    assert str(info.value) == "/v/x.mp4: file does not exist"
    assert seen == [0, 1, 2, 3]  # the batches before the bad one arrived, in order
    # with workers, the worker's traceback travels along for --debug
    assert isinstance(info.value.__cause__, WorkerTraceback) == (workers > 0)


def test_batches_without_errors_are_untouched_and_the_loader_can_be_iterated_again():
    loader = WorkerSafeLoader(Items(-1, DataError("never")), batch_size=3, collate_fn=_stack,
                              num_workers=2, multiprocessing_context=SPAWN, timeout=120)
    for _ in range(2):
        assert [b.tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert len(loader) == 3


def _refuse(items):
    raise ConfigError("data.num_frames: a batch of clips of different lengths")


def test_a_user_error_raised_by_collate_is_carried_too():
    loader = WorkerSafeLoader(Items(-1, DataError("never")), batch_size=2, collate_fn=_refuse,
                              num_workers=2, multiprocessing_context=SPAWN, timeout=120)
    with pytest.raises(ConfigError, match="data.num_frames: a batch"):
        next(iter(loader))


def test_a_bug_keeps_torchs_report():
    # not a user error: torch's own wrapper, with the worker's traceback in its message
    # spawned workers: a forked child of a test process that already runs threads (torch's,
    # pytest-xdist's) can inherit a held lock and hang on it (seen once in CI: a futex wait)
    loader = WorkerSafeLoader(Items(1, KeyError("oops")), batch_size=2, collate_fn=_stack,
                              num_workers=2, multiprocessing_context=SPAWN, timeout=120)
    with pytest.raises(KeyError, match="Caught KeyError in DataLoader worker"):
        list(loader)
    assert not issubclass(KeyError, USER_ERRORS)


class Unpicklable(DataError):
    def __init__(self, handle):
        self.handle = handle
        super().__init__("an error holding an open resource")

    def __reduce__(self):
        raise TypeError("cannot pickle the resource")


def test_a_user_error_that_cannot_be_pickled_falls_back_to_torch_instead_of_hanging():
    loader = WorkerSafeLoader(Items(0, Unpicklable(object())), batch_size=2, collate_fn=_stack,
                              num_workers=1, timeout=60)
    with pytest.raises(Exception, match="an error holding an open resource"):
        list(loader)
