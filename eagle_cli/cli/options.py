"""The options that are not settings — which artifact a command reads — and the helpers that find them.

Settings are declared once in ``params.py`` and become options through :func:`eagle_cli.cli.app.command`;
what is left here names inputs: an artifact by path or id, or by default the latest of its kind.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from eagle_cli import artifacts
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.cli.app import only
from eagle_cli.data.source import FOLDER_CATEGORY
from eagle_cli.params import IN, DataParams, StoreParams


def artifact_option(kind: str, what: str = "") -> typer.Option:
    """``--<kind> PATH|ID``: one artifact of ``kind`` to read; by default the latest per category."""
    return typer.Option(f"--{kind}", help=f"{what or kind.capitalize()} artifact (path or id); default: the latest "
                        "of each category in the run.", rich_help_panel=IN)


#: The categories a command works on, and nothing else of the data settings.
Categories = Annotated[DataParams, only("category")]


def inputs(spec: Optional[str], kind: str, categories: tuple[str, ...], store: StoreParams,
           where: Optional[dict] = None) -> list[ArtifactRef]:
    """The artifact given by path or id, or the latest of ``kind`` for each category (default: all in the run)."""
    if spec:
        return [artifacts.resolve(spec, root=store.artifacts, run=store.run, category="", kind=kind)]
    names = list(categories) or artifacts.categories_with(store.artifacts, store.run, kind) or [FOLDER_CATEGORY]
    return [artifacts.latest(store.artifacts, store.run, name, kind, where=where) for name in names]

