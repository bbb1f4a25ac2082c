"""The one home of "this is the user's input's fault": the base of calm's user errors.

Every error that means "the file, line, key or flag you gave is wrong" (ConfigError, DataError and
its VideoDecodeError, CheckpointError, the CLI's UserError, ...) derives from `CalmUserError`.
The command line prints these as one line with exit code 2; DataLoader workers hand them to the
main process as themselves (calm.data.worker_errors). Anything else is a bug and keeps its
traceback. `USER_ERRORS` adds the one built-in treated the same way: a file that is not there.

A subclass whose constructor takes other arguments than one message must define `__reduce__`
(see VideoDecodeError): errors cross process boundaries by pickling, in DataLoader workers and in
the multiprocessing pools of `calm data-check` and `calm prepare-frames`.
"""


class CalmUserError(Exception):
    """An error in what the user gave calm; its message names the file (or key) and the problem."""


USER_ERRORS: tuple[type[BaseException], ...] = (CalmUserError, FileNotFoundError)
