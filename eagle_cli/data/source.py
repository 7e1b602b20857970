"""Where a stage's images come from: a dataset root with a layout, or a plain pair of folders."""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass
from pathlib import Path

from eagle_cli.data import folder, mmad, mvtec, visa
from eagle_cli.data.sample import Sample
from eagle_cli.errors import DataError
from eagle_cli.params import DataParams

#: Category name used for a plain pair of folders when none is given.
FOLDER_CATEGORY = "default"


@functools.lru_cache(maxsize=4)
def _mmad_index(root: Path, json_path: Path | None) -> mmad.MmadIndex:
    # mmad.json holds ~40k questions; parse and check it once per process.
    return mmad.MmadIndex(root, json_path)


@dataclass(frozen=True)
class DataSource:
    """A dataset root and layout, or ``good``/``test`` folders (layout ``folder``)."""

    layout: str = "auto"
    root: Path | None = None
    good: Path | None = None
    test: Path | None = None
    split_csv: Path | None = None
    mmad_json: Path | None = None
    mmad_dataset: str | None = None

    @classmethod
    def of(cls, params: DataParams) -> DataSource:
        """The source the data settings name (checked and resolved by :meth:`resolved`)."""
        return cls(params.layout, params.data, params.good, params.test, params.split_csv, params.mmad_json,
                   params.mmad_dataset)

    def mmad_index(self) -> mmad.MmadIndex:
        return _mmad_index(self.root, self.mmad_json)

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
            if self.mmad_json or (root / mmad.DEFAULT_JSON).is_file():
                layout = "mmad"
            else:
                layout = "visa" if (self.split_csv or (root / visa.DEFAULT_CSV).is_file()) else "mvtec"
        if layout == "folder":
            raise DataError("Layout 'folder' needs --good/--test folders, not --data.")
        dataset = self.mmad_dataset
        if layout == "mmad" and dataset is None:
            found = _mmad_index(root.resolve(), self.mmad_json).datasets()
            if len(found) != 1:
                raise DataError(f"{self.mmad_json or root / mmad.DEFAULT_JSON} covers {', '.join(found)}; "
                                "choose one with --mmad-dataset.")
            dataset = found[0]
        return DataSource(layout, root.resolve(), None, None, self.split_csv, self.mmad_json, dataset)

    def categories(self) -> list[str]:
        if self.layout == "folder":
            return [FOLDER_CATEGORY]
        if self.layout == "mmad":
            return self.mmad_index().categories(self.mmad_dataset)
        found = visa.categories(self.root, self.split_csv) if self.layout == "visa" else mvtec.categories(self.root)
        if not found:
            expected = ("ROOT/split_csv/1cls.csv and the images it lists" if self.layout == "visa"
                        else "ROOT/<category>/train/good/ with images")
            raise DataError(f"No categories found under {self.root} for the {self.layout} layout (it needs "
                            f"{expected}). Point --data at a dataset root, or give plain folders with "
                            "--good and --test.")
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
        if self.layout == "mmad":
            index = self.mmad_index()
            if split == "test":
                return index.test_samples(self.mmad_dataset, category)
            return mvtec.scan(index.train_folder(self.mmad_dataset), category, "train")
        return mvtec.scan(self.root, category, split)

    @classmethod
    def from_description(cls, described: dict) -> DataSource:
        """Rebuild the source a stage recorded with :meth:`describe`."""
        path = lambda key: Path(described[key]) if described.get(key) else None  # noqa: E731
        return cls(layout=described["layout"], root=path("root"), good=path("good"), test=path("test"),
                   split_csv=path("split_csv"), mmad_json=path("mmad_json"),
                   mmad_dataset=described.get("mmad_dataset"))

    def describe(self) -> dict:
        return {
            "layout": self.layout,
            "root": str(self.root) if self.root else None,
            "good": str(self.good.resolve()) if self.good else None,
            "test": str(self.test.resolve()) if self.test else None,
            "split_csv": str(self.split_csv.resolve()) if self.split_csv else None,
            "mmad_json": str(self.mmad_json.resolve()) if self.mmad_json else None,
            "mmad_dataset": self.mmad_dataset,
        }
