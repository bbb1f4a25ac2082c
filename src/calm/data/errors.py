from calm.errors import CalmUserError


class DataError(CalmUserError, ValueError):
    """Bad input data: the message names the file (and row) and the problem."""


class VideoDecodeError(DataError):
    """A listed video is missing or cannot be decoded; carries the path and the reason."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # rebuilt from (path, reason), not from the one-string message
        return type(self), (self.path, self.reason)
