"""How library code reports progress without knowing about the terminal."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

#: ``advance(n)`` moves a started task forward by n units (a fraction for work done in passes).
Advance = Callable[[float], None]


class Reporter(Protocol):
    def task(self, description: str, total: int) -> Iterator[Advance]: ...


class Silent:
    """The reporter used when nobody is watching (tests, ``--quiet``)."""

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[Advance]:
        yield lambda n=1: None
