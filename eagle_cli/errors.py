"""One exception tree for every failure a user can act on.

The CLI catches :class:`EagleError` once, prints its message and exits 1 (2 for a
:class:`SettingsError`: a usage error); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EagleError(Exception):
    """A failure the user can fix: the message says what failed, the values, and what to do."""


class DataError(EagleError):
    """A dataset folder, split file or category is missing or malformed."""


class ImageError(EagleError):
    """One image (or mask) cannot be used; stages may skip it under ``--on-error skip``."""

    def __init__(self, path, reason: str, *, kind: str = "unusable"):
        self.path = str(path)
        self.reason = reason
        #: missing, too_large, not_image, damaged, unsupported, too_small: how an upload is answered.
        self.kind = kind
        super().__init__(f"{path}: {reason}")


class WeightsError(EagleError):
    """Backbone weights are missing, corrupt or do not fit the architecture."""


class ArtifactError(EagleError):
    """An artifact is missing, edited, of another kind or schema, or of incompatible lineage."""


class ParameterError(EagleError):
    """A stage parameter is out of range or inconsistent with the data."""


class SettingsError(ParameterError):
    """Settings that break their declaration (type, choice, bounds, rule): each problem named by its option.

    ``problems`` is a list of (config name, problem); the command line and a config file print the
    same problems, and both exit 2.
    """

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("\n".join(f"--{name.replace('_', '-')} {problem}." for name, problem in problems))

    @classmethod
    def of(cls, name: str, problem: str) -> SettingsError:
        return cls([(name, problem)])
