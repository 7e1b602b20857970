"""Settings declared once: name, default, bounds, choices, help and panel in one dataclass field.

A group of settings is a frozen dataclass whose fields are declared with :func:`setting` (or
:func:`nested` for a group inside a group). Everything else follows from that declaration:

- the check every constructor runs (:func:`check`): types, choices, bounds, finite numbers, and a
  field's own rule; every problem at once, each named as its command-line option;
- the command-line options (``cli/options.py``), the ``eagle run`` config keys (``config.py``) and
  ``docs/cli.md``, through :func:`options_of` and :func:`build`;
- what enters an artifact id (:func:`identity`): every field that changes results (not those
  declared ``runtime``), where it applies (``only``). A stage adds the content of what it reads
  (images, files, input artifacts), never a setting by hand.

A setting's option name is its field name with the group's ``PREFIX`` (``BoxParams.level`` is
``--box-level``, config key ``box_level``).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from types import UnionType
from typing import Any, Callable, Iterator, Literal, Mapping, Union, get_args, get_origin, get_type_hints

from eagle_cli.errors import SettingsError


@dataclass(frozen=True)
class Spec:
    """What one setting is, besides its name, type and default."""

    help: str
    panel: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    #: Changes speed or where work runs, never a result: left out of artifact ids.
    runtime: bool = False
    #: The setting applies only when ``only(settings)`` (another setting chose it); ``when`` says when, in help.
    only: Callable[[Any], bool] | None = None
    when: str = ""
    #: Text (command line) or a list (YAML, JSON) into the value, and back: for tuples and mixed types.
    parse: Callable[[Any], Any] | None = None
    text: Callable[[Any], str] | None = None
    #: A rule of the value's own (a device name, a URL): the problem, or None.
    rule: Callable[[Any], str | None] | None = None
    envvar: str | None = None
    short: str | None = None


@dataclass(frozen=True)
class Group:
    """A group of settings inside another; with ``switch`` it is optional, on when the flag is given."""

    kind: type
    switch: str | None = None
    help: str = ""
    panel: str = ""
    runtime: bool = False


def setting(default: Any, help: str, *, panel: str, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, runtime: bool = False,
            only: Callable[[Any], bool] | None = None, when: str = "", parse: Callable[[Any], Any] | None = None,
            text: Callable[[Any], str] | None = None, rule: Callable[[Any], str | None] | None = None,
            envvar: str | None = None, short: str | None = None) -> Any:
    """Declare a setting: a dataclass field carrying its :class:`Spec`."""
    spec = Spec(help, panel, low, high, low_open, high_open, runtime, only, when, parse, text, rule, envvar, short)
    return field(default=default, metadata={"setting": spec})


def nested(kind: type, *, switch: str | None = None, help: str = "", panel: str = "", runtime: bool = False) -> Any:
    """Declare a group of settings inside another (``kind``'s own ``PREFIX`` names its options)."""
    group = Group(kind, switch, help, panel, runtime)
    if switch:
        return field(default=None, metadata={"group": group})
    return field(default_factory=kind, metadata={"group": group})


def option_name(settings_type: type, name: str) -> str:
    """The config key of field ``name`` of ``settings_type`` (``--`` and dashes make the option)."""
    return getattr(settings_type, "PREFIX", "") + name


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def range_text(spec: Spec) -> str:
    """The bounds as a reader expects them: ``(0, 1]``, ``≥ 1``, ``< 1``; empty without bounds."""
    low, high = spec.low, spec.high
    number = lambda value: f"{value:g}"  # noqa: E731
    if low is not None and high is not None:
        return f"{'(' if spec.low_open else '['}{number(low)}, {number(high)}{')' if spec.high_open else ']'}"
    if low is not None:
        return f"{'>' if spec.low_open else '≥'} {number(low)}"
    if high is not None:
        return f"{'<' if spec.high_open else '≤'} {number(high)}"
    return ""


def _bound_problem(spec: Spec, value: float) -> str | None:
    too_low = spec.low is not None and (value <= spec.low if spec.low_open else value < spec.low)
    too_high = spec.high is not None and (value >= spec.high if spec.high_open else value > spec.high)
    if too_low or too_high:
        bounds = range_text(spec)
        return f"must be in {bounds}" if bounds[0] in "([" else f"must be {bounds}"
    return None


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why ``value`` is not of type ``hint``, or None."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(value, a) for a in args if a is not type(None)]
        if None in problems:
            return None
        return "must be " + " or ".join(problem.removeprefix("must be ") for problem in problems)
    if origin is Literal:
        return None if value in args else f"must be one of {', '.join(map(str, args))}"
    if hint is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if hint is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "must be a whole number"
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        return None if math.isfinite(value) else "must be a finite number"
    if hint is str:
        return None if isinstance(value, str) else "must be text"
    if hint is Path:
        return None if isinstance(value, Path) else "must be a path"
    if origin is tuple:
        if not isinstance(value, tuple):
            return "must be a list"
        return next((_type_problem(item, args[0]) for item in value if _type_problem(item, args[0])), None)
    return None


def _shown(value: Any, spec: Spec | None = None) -> str:
    if spec is not None and spec.text is not None and isinstance(value, tuple):
        return repr(spec.text(value))
    return repr(value)


def check(settings: Any) -> None:
    """Check every declared field of ``settings`` against its type, bounds and rule; raise all problems at once."""
    hints = get_type_hints(type(settings))
    problems = []
    for item in fields(settings):
        spec = item.metadata.get("setting")
        if spec is None:
            continue
        value, name = getattr(settings, item.name), option_name(type(settings), item.name)
        problem = _type_problem(value, hints[item.name])
        if problem is None:
            numbers = value if isinstance(value, tuple) else (value,)
            problem = next((p for n in numbers if isinstance(n, (int, float)) and not isinstance(n, bool)
                            and (p := _bound_problem(spec, n))), None)
        if problem is None and spec.rule is not None:
            problem = spec.rule(value)
        if problem is not None:
            problems.append((name, f"{problem}, got {_shown(value, spec)}"))
    if problems:
        raise SettingsError(problems)


def identity(settings: Any) -> dict[str, Any]:
    """The settings that change results, by config name, as plain JSON values: what an artifact id hashes."""
    out: dict[str, Any] = {}
    for item in fields(settings):
        value = getattr(settings, item.name)
        if (group := item.metadata.get("group")) is not None:
            if group.switch:
                out[group.switch] = value is not None
            if value is not None and not group.runtime:
                out.update(identity(value))
            continue
        spec = item.metadata.get("setting")
        if spec is None or spec.runtime or (spec.only is not None and not spec.only(settings)):
            continue
        name = option_name(type(settings), item.name)
        out[name] = list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value
    return out


@dataclass(frozen=True)
class Option:
    """One setting as the command line and a config file name it."""

    name: str  # the config key; the option is --name with dashes
    path: tuple[str, ...]  # field names from the outer group
    hint: Any
    default: Any
    spec: Spec | None  # None for a group's switch
    group: Group | None = None  # for a switch: the group it turns on

    @property
    def help(self) -> str:
        if self.spec is None:
            return self.group.help
        bounds, text = range_text(self.spec), self.spec.help
        if self.spec.when:
            text = f"{self.spec.when}: {text[0].lower()}{text[1:]}"
        return text + (f" Range: {bounds}." if bounds else "")

    @property
    def panel(self) -> str:
        return self.group.panel if self.spec is None else self.spec.panel


def options_of(settings_type: type, path: tuple[str, ...] = ()) -> Iterator[Option]:
    """Every setting of ``settings_type``, groups flattened, in declaration order."""
    hints = get_type_hints(settings_type)
    for item in fields(settings_type):
        if (group := item.metadata.get("group")) is not None:
            if group.switch:
                yield Option(group.switch, (*path, item.name), bool, False, None, group)
            yield from options_of(group.kind, (*path, item.name))
        elif (spec := item.metadata.get("setting")) is not None:
            default = item.default if item.default is not MISSING else item.default_factory()
            yield Option(option_name(settings_type, item.name), (*path, item.name), hints[item.name], default, spec)


def _coerce(value: Any, hint: Any, spec: Spec, base: Path | None) -> Any:
    """A value from text (command line), YAML or JSON as field type ``hint`` holds it; the check judges it."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType) and value is not None:
        hint = next(a for a in args if a is not type(None))
        origin = get_origin(hint)
    if hint is Path and isinstance(value, str):
        path = Path(value).expanduser()
        return (base / path).resolve() if base is not None and not path.is_absolute() else path
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin is tuple and value is not None and not isinstance(value, tuple):
        return spec.parse(value) if spec.parse is not None else tuple(value) if isinstance(value, list) else value
    if spec.parse is not None and isinstance(value, str):
        return spec.parse(value)
    return value


def build(settings_type: type, values: Mapping[str, Any], *, base: Path | None = None) -> Any:
    """``settings_type`` from ``values`` keyed by config name (nested groups' keys carry their prefix), the
    rest at their defaults; relative paths are taken from ``base``. Every problem is raised at once."""
    kwargs, problems = {}, []
    hints = get_type_hints(settings_type)
    for item in fields(settings_type):
        if (group := item.metadata.get("group")) is not None:
            if group.switch and not values.get(group.switch, False):
                continue
            try:
                kwargs[item.name] = build(group.kind, values, base=base)
            except SettingsError as error:
                problems += error.problems
            continue
        spec = item.metadata.get("setting")
        name = option_name(settings_type, item.name)
        if spec is None or name not in values:
            continue
        try:
            kwargs[item.name] = _coerce(values[name], hints[item.name], spec, base)
        except SettingsError as error:
            problems += error.problems
    try:
        built = settings_type(**kwargs)
    except SettingsError as error:
        problems += error.problems
    if problems:
        raise SettingsError(list(dict.fromkeys(problems)))
    return built


def is_settings(kind: Any) -> bool:
    """Whether ``kind`` is a group of declared settings."""
    return is_dataclass(kind) and isinstance(kind, type) and any(
        "setting" in item.metadata or "group" in item.metadata for item in fields(kind))
