"""Prompt wording as editable Jinja2 templates, checked before any work and rendered under limits.

Templates are shared like any prompt wording, so they are treated as untrusted input. They render in
Jinja2's immutable sandbox (no reach into Python internals), with no loader (a template is one
self-contained file: ``include``, ``import`` and ``extends`` are refused when it is read), and under
limits on what a part may cost: :data:`MAX_CHARS` characters of output or of any value it builds, and
:data:`MAX_SECONDS` of rendering. A template that breaks any of this stops with one message naming
its file and part, instead of a traceback or a machine that runs out of memory.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import jinja2
import jinja2.meta
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from eagle_cli.errors import ParameterError
from eagle_cli.yaml_files import YamlProblem, load_yaml, parse_yaml

PARTS = ("instruction", "answer_format", "domain_knowledge", "templates", "query", "verdict", "boxes", "heatmap",
         "question")
#: The fields every part is given; the question part is given the question and its options as well.
COMMON_FIELDS = frozenset({"category", "verdict", "score", "tau", "s_max", "n_boxes", "knowledge", "shots"})
PART_FIELDS = {part: COMMON_FIELDS | ({"question", "options"} if part == "question" else set()) for part in PARTS}
DEFAULT = "default.yaml"

#: The most characters a part may render, and the longest string or list it may build on the way.
MAX_CHARS = 1_000_000
#: The longest a part may take to render.
MAX_SECONDS = 2.0

#: What a template is checked with when it is read, so a part that cannot render fails before any work.
_TRIAL_FIELDS = {"category": "part", "verdict": "anomalous", "score": 1.5, "tau": 1.0, "s_max": 3.0, "n_boxes": 2,
                 "knowledge": "Scratches longer than 2 mm are defects.", "shots": 1, "question": "Is there a defect?",
                 "options": [{"letter": "A", "text": "Yes"}, {"letter": "B", "text": "No"}]}
_OTHER_FILES = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from … import",
                nodes.Extends: "extends"}
_COMPILED_AS = "<template>"  # the file name Jinja2 gives code compiled from a string


class _Limit(Exception):
    """A part went past one of the render limits (the message says which)."""


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_CHARS:
        raise _Limit(f"a number above {MAX_CHARS:,} ({value:,}) was given where sizes and counts go")
    if isinstance(value, (str, list, tuple, dict, set)) and len(value) > MAX_CHARS:
        raise _Limit(f"a value of {len(value):,} items or characters was built (at most {MAX_CHARS:,})")
    return value


def _check_format(text: Any) -> None:
    """A format string whose widths alone would build a string past the limit."""
    if isinstance(text, str) and any(int(run) > MAX_CHARS for run in re.findall(r"\d{7,}", text)):
        raise _Limit(f"a format width above {MAX_CHARS:,} was given")


def _check_growth(name: str, target: Any, args: tuple) -> None:
    """The size of what a string operation that multiplies its input would build, before it builds it."""
    if not isinstance(target, str) or not args:
        return
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        grown = target.count(args[0]) * len(args[1])
    elif name == "join" and isinstance(args[0], (list, tuple, range, str)):
        grown = len(args[0]) * len(target)
    elif name == "expandtabs" and isinstance(args[0], int):
        grown = target.count("\t") * args[0]
    else:
        return
    if grown > MAX_CHARS:
        raise _Limit(f"{name} would build about {grown:,} characters (at most {MAX_CHARS:,})")


def _bounded_filter(name: str, function: Callable) -> Callable:
    @functools.wraps(function)  # keeps Jinja2's marker of which arguments the filter is passed
    def bounded(*args, **kwargs):
        for value in (*args, *kwargs.values()):
            _check_size(value)
        # The value filtered and the filter's own arguments, without the context some filters are passed.
        values = [a for a in args if not isinstance(a, (jinja2.runtime.Context, jinja2.Environment, nodes.EvalContext))]
        if name == "format" and values:
            _check_format(values[0])
        elif name == "join" and len(values) >= 2:
            _check_growth("join", values[1], (values[0] if isinstance(values[0], str) else list(values[0]),))
        elif name == "replace" and len(values) >= 3:
            _check_growth("replace", values[0], tuple(values[1:3]))
        return _check_size(function(*args, **kwargs))
    return bounded


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every operation that could build a huge value checked first."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self):
        super().__init__(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        # No lipsum (text of any length), cycler, joiner or namespace (a mutable value that lets a loop grow
        # a string across iterations): a prompt needs none of them.
        self.globals = {"range": self.globals["range"], "dict": dict}
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_CHARS:
                    raise _Limit(f"repeating a value {count:,} times would build {len(seq) * count:,} items")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 10_000:
                raise _Limit(f"a power with exponent {right:,} was asked for")
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
            for value in right if isinstance(right, tuple) else (right,):
                _check_size(value)
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - the base class's signature
        for value in (*args, *kwargs.values()):
            _check_size(value)
        target = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(target, str):
            _check_growth(name, target, args)
        return _check_size(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value):
        # Jinja2 swaps str.format for its own when the attribute is read, so the width is checked there.
        if getattr(value, "__name__", "") in ("format", "format_map"):
            _check_format(getattr(value, "__self__", None))
        return super().wrap_str_format(value)


def _rendered_within(seconds: float, work: Callable[[], str]) -> str:
    """``work()``, stopped once template code has run for ``seconds`` (loops included, whatever they do)."""
    deadline = time.monotonic() + seconds

    def each_line(frame, event, arg):
        if time.monotonic() > deadline:
            raise _Limit(f"rendering took longer than {seconds:g} s")
        return each_line

    def each_call(frame, event, arg):
        return each_line if frame.f_code.co_filename == _COMPILED_AS else None

    previous = sys.gettrace()
    sys.settrace(each_call)
    try:
        return work()
    finally:
        sys.settrace(previous)


class Templates:
    """The rendered parts of a prompt; ``render(part, **fields)`` fills one."""

    def __init__(self, source: dict[str, str], origin: str):
        env = _BoundedSandbox()
        missing = [part for part in PARTS if part not in source]
        unknown_parts = sorted(set(source) - set(PARTS))
        if missing or unknown_parts:
            raise ParameterError(f"Template {origin} must define exactly {', '.join(PARTS)}; "
                                 f"missing {missing or 'none'}, unknown {unknown_parts or 'none'}.")
        self.origin = origin
        self._templates = {}
        for part, text in source.items():
            try:
                tree = env.parse(text)
            except jinja2.TemplateSyntaxError as exc:
                raise ParameterError(f"Template {origin}, part {part!r}, line {exc.lineno}: {exc.message}") from None
            for kind, tag in _OTHER_FILES.items():
                if (found := tree.find(kind)) is not None:
                    raise ParameterError(f"Template {origin}, part {part!r}, line {found.lineno}: {{% {tag} %}} is "
                                         "not available; a template is one file and reads no other. Write the "
                                         "text out in this part.")
            unknown = sorted(jinja2.meta.find_undeclared_variables(tree) - PART_FIELDS[part])
            if unknown:
                raise ParameterError(f"Template {origin}, part {part!r} uses field(s) {unknown} that it is not "
                                     f"given; it may use {', '.join(sorted(PART_FIELDS[part]))}.")
            self._templates[part] = env.from_string(text)
        for part in PARTS:
            self.render(part, **{key: value for key, value in _TRIAL_FIELDS.items() if key in PART_FIELDS[part]})

    @classmethod
    def load(cls, path: Path | None = None) -> Templates:
        """The shipped wording, or the YAML file at ``path``."""
        try:
            if path is None:
                origin = DEFAULT
                source = parse_yaml(resources.files("eagle_cli.prompts").joinpath("templates", DEFAULT).read_text())
            else:
                origin = str(path)
                if not path.is_file():
                    raise ParameterError(f"Template file {path} does not exist.")
                source = load_yaml(path)
        except YamlProblem as exc:
            raise ParameterError(f"Template {origin} {exc}.") from None
        if not isinstance(source, dict):
            raise ParameterError(f"Template {origin} must be a YAML mapping of part name to text.")
        return cls({key: str(value) for key, value in source.items()}, origin)

    def render(self, part: str, **fields) -> str:
        """One part filled with ``fields``; any failure of the template is one :class:`ParameterError`."""
        where = f"Template {self.origin}, part {part!r}"
        try:
            return _rendered_within(MAX_SECONDS, lambda: self._bounded_output(part, fields)).strip()
        except _Limit as exc:
            raise ParameterError(f"{where} was stopped: {exc}. A part may render at most {MAX_CHARS:,} characters "
                                 f"in {MAX_SECONDS:g} s; simplify it.") from None
        except SecurityError as exc:
            raise ParameterError(f"{where} tried something a prompt template may not do ({exc}); templates fill "
                                 "in fields, they cannot reach Python objects.") from None
        except RecursionError:
            raise ParameterError(f"{where} calls itself without end (a macro that recurses); "
                                 "remove the recursion.") from None
        except (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError, MemoryError) as exc:
            raise ParameterError(f"{where} could not be filled in: {type(exc).__name__}: {exc}.") from None

    def _bounded_output(self, part: str, fields: dict) -> str:
        pieces, size = [], 0
        for piece in self._templates[part].generate(**fields):
            size += len(piece)
            if size > MAX_CHARS:
                raise _Limit(f"its output passed {MAX_CHARS:,} characters")
            pieces.append(piece)
        return "".join(pieces)
