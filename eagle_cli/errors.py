"""One exception tree for every failure a user can act on.

The CLI catches :class:`EagleError` once, prints its message and exits 1; anything else is a bug
and keeps its traceback.
"""


class EagleError(Exception):
    """A failure the user can fix: the message says what failed, the values, and what to do."""


class DataError(EagleError):
    """A dataset folder, split file or category is missing or malformed."""


class ImageError(EagleError):
    """One image (or mask) cannot be used; stages may skip it under ``--on-error skip``."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class WeightsError(EagleError):
    """Backbone weights are missing, corrupt or do not fit the architecture."""


class ArtifactError(EagleError):
    """An artifact is missing, edited, of another kind or schema, or of incompatible lineage."""


class ParameterError(EagleError):
    """A stage parameter is out of range or inconsistent with the data."""
