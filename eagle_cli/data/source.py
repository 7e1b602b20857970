"""Where a stage's images come from: a dataset root with a layout, or a plain pair of folders."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from eagle_cli.data import folder, mvtec, visa
from eagle_cli.data.sample import Sample
from eagle_cli.errors import DataError

LAYOUTS = ("auto", "mvtec", "visa", "folder")
#: Category name used for a plain pair of folders when none is given.
FOLDER_CATEGORY = "default"


@dataclass(frozen=True)
class DataSource:
    """A dataset root and layout, or ``good``/``test`` folders (layout ``folder``)."""

    layout: str = "auto"
    root: Path | None = None
    good: Path | None = None
    test: Path | None = None
    split_csv: Path | None = None

    def resolved(self) -> DataSource:
        """Check the paths exist and replace ``auto`` with the detected layout."""
        if self.good or self.test:
            for path in (self.good, self.test):
                if path is not None and not path.is_dir():
                    raise DataError(f"{path} is not a folder; --good and --test take folders of images.")
            return DataSource("folder", None, self.good, self.test, None)
        if self.root is None:
            raise DataError("No images given: pass --data ROOT (MVTec-AD or VisA layout) or --good DIR / --test DIR.")
        root = self.root
        if not root.is_dir():
            raise DataError(f"Dataset folder {root} does not exist.")
        layout = self.layout
        if layout == "auto":
            layout = "visa" if (self.split_csv or (root / visa.DEFAULT_CSV).is_file()) else "mvtec"
        if layout not in ("mvtec", "visa"):
            raise DataError(f"Layout {layout!r} needs --good/--test folders, not --data.")
        return DataSource(layout, root.resolve(), None, None, self.split_csv)

    def categories(self) -> list[str]:
        if self.layout == "folder":
            return [FOLDER_CATEGORY]
        found = visa.categories(self.root, self.split_csv) if self.layout == "visa" else mvtec.categories(self.root)
        if not found:
            raise DataError(f"No categories found under {self.root} for the {self.layout} layout.")
        return found

    def check_category(self, category: str) -> None:
        known = self.categories()
        if self.layout == "folder" or category in known:
            return
        close = difflib.get_close_matches(category, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"Category {category!r} is not in {self.root} ({', '.join(known)}).{hint}")

    def scan(self, category: str, split: str) -> list[Sample]:
        """The sorted samples of ``split`` ("train" or "test") for one category."""
        self.check_category(category)
        if self.layout == "folder":
            directory = self.good if split == "train" else self.test
            if directory is None:
                raise DataError(f"The {split} split needs --{'good' if split == 'train' else 'test'} DIR.")
            return folder.scan(directory, split)
        if self.layout == "visa":
            return visa.scan(self.root, category, split, self.split_csv)
        return mvtec.scan(self.root, category, split)

    def describe(self) -> dict:
        return {
            "layout": self.layout,
            "root": str(self.root) if self.root else None,
            "good": str(self.good.resolve()) if self.good else None,
            "test": str(self.test.resolve()) if self.test else None,
        }
