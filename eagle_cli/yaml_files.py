"""YAML that people write (run configs, prompt templates, ``--set`` values), read strictly.

Plain ``yaml.safe_load`` lets the last of two equal keys win in silence and expands aliases without
bound (a "billion laughs" file of a few lines fills gigabytes). Neither has a use in a settings
file, so both are refused with the line they are on, as are bytes that are not UTF-8.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError


class YamlProblem(ValueError):
    """Why a YAML text could not be read, in one sentence a user can act on."""


class _StrictLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise ConstructorError(None, None, "aliases (*name) are not accepted here; write the value out", mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        first_line = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in first_line:
                    raise ConstructorError(None, None, f"the key {key!r} is given twice (first on line "
                                                       f"{first_line[key] + 1}); keep one", key_node.start_mark)
                first_line[key] = key_node.start_mark.line
            except TypeError:
                continue  # an unhashable key: the base class names it
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """The value ``text`` holds; :class:`YamlProblem` if it is not YAML, repeats a key or uses an alias."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        where = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark else ""
        what = " ".join(filter(None, [exc.context, exc.problem]))
        raise YamlProblem(f"is not valid YAML ({where}{what})") from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"is not valid YAML ({' '.join(str(exc).split())})") from None


def load_yaml(path: Path) -> Any:
    """The value the file at ``path`` holds, read as :func:`parse_yaml` reads text (UTF-8 only)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise YamlProblem(f"is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                          "save it as UTF-8") from None
    return parse_yaml(text)
