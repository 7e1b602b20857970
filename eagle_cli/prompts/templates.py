"""Prompt wording as editable Jinja2 templates, checked for unknown fields before any work.

Templates are shared like any prompt wording, so they are rendered in Jinja2's immutable sandbox:
a template that reaches for Python internals (``__class__``, ``__globals__``, ``mro`` …) or
modifies a value stops with one message naming its file, instead of running code.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jinja2
import jinja2.meta
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from eagle_cli.errors import ParameterError

PARTS = ("instruction", "answer_format", "domain_knowledge", "templates", "query", "verdict", "boxes", "heatmap",
         "question")
FIELDS = {"category", "verdict", "score", "tau", "s_max", "n_boxes", "knowledge", "shots", "question", "options"}
DEFAULT = "default.yaml"


class Templates:
    """The rendered parts of a prompt; ``render(part, **fields)`` fills one."""

    def __init__(self, source: dict[str, str], origin: str):
        env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        missing = [part for part in PARTS if part not in source]
        unknown_parts = sorted(set(source) - set(PARTS))
        if missing or unknown_parts:
            raise ParameterError(f"Template {origin} must define exactly {', '.join(PARTS)}; "
                                 f"missing {missing or 'none'}, unknown {unknown_parts or 'none'}.")
        self._templates = {}
        for part, text in source.items():
            try:
                fields = jinja2.meta.find_undeclared_variables(env.parse(text))
            except jinja2.TemplateSyntaxError as exc:
                raise ParameterError(f"Template {origin}, part {part!r}, line {exc.lineno}: {exc.message}") from None
            unknown = sorted(fields - FIELDS)
            if unknown:
                raise ParameterError(f"Template {origin}, part {part!r} uses unknown field(s) {unknown}; "
                                     f"available: {', '.join(sorted(FIELDS))}.")
            self._templates[part] = env.from_string(text)
        self.origin = origin

    @classmethod
    def load(cls, path: Path | None = None) -> Templates:
        """The shipped wording, or the YAML file at ``path``."""
        if path is None:
            text, origin = resources.files("eagle_cli.prompts").joinpath("templates", DEFAULT).read_text(), DEFAULT
        else:
            if not path.is_file():
                raise ParameterError(f"Template file {path} does not exist.")
            text, origin = path.read_text(), str(path)
        source = yaml.safe_load(text)
        if not isinstance(source, dict):
            raise ParameterError(f"Template {origin} must be a YAML mapping of part name to text.")
        return cls({key: str(value) for key, value in source.items()}, origin)

    def render(self, part: str, **fields) -> str:
        try:
            return self._templates[part].render(**fields).strip()
        except SecurityError as exc:
            raise ParameterError(f"Template {self.origin}, part {part!r}, tried something a prompt template may "
                                 f"not do ({exc}); templates fill in fields, they cannot reach Python "
                                 "objects.") from None
