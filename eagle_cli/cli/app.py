"""The Typer application: its groups, the root options, one error path, and how commands print.

A command is a plain function whose parameters are either its own options or groups of declared
settings (``params.py``): :func:`command` turns each group into its options (names, defaults,
choices, ranges, help and panels from the declarations), builds the group from the values given,
and calls the function with the built objects. A value that breaks its declaration is a usage error
(exit 2) naming every problem, as a config file's would be; an :class:`EagleError` is one message
and exit 1. Stage modules (torch, transformers, matplotlib) are imported inside the commands that
use them, so ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import functools
import inspect
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Iterator, Optional, get_args, get_origin, get_type_hints

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from eagle_cli import __version__
from eagle_cli.artifacts import ArtifactRef
from eagle_cli.context import Context
from eagle_cli.errors import EagleError, SettingsError
from eagle_cli.params import EXPERT, EXPERT_PRESETS, OutputParams, StoreParams
from eagle_cli.settings import Option, build, flag, is_settings, options_of


class _Flagless:
    """Show the help option as the flag it is (Typer shows ``--help <bool>``)."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Command(_Flagless, typer.core.TyperCommand):
    pass


class _Group(_Flagless, typer.core.TyperGroup):
    pass


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="eagle: industrial visual inspection — expert anomaly scoring, normal-only thresholds, "
                       "multimodal reasoning, staged artifacts.")
data_app = typer.Typer(cls=_Group, help="Datasets: generate the synthetic data.", no_args_is_help=True)
backbones_app = typer.Typer(cls=_Group, help="Backbones: list them, bring weights onto an offline machine.",
                            no_args_is_help=True)
artifacts_app = typer.Typer(cls=_Group, help="Artifacts: list and inspect what the stages wrote.",
                            no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(backbones_app, name="backbones")
app.add_typer(artifacts_app, name="artifacts")

err = Console(stderr=True, soft_wrap=True)  # paths must survive copy and paste
out = Console(soft_wrap=True)
_debug = {"on": False}

PresetOpt = Annotated[Optional[str], typer.Option(
    help=f"A named bundle of expert settings ({', '.join(EXPERT_PRESETS)}). reference: the reference code's expert "
         "(layers pooled to 1024 values, an image scored by its highest patch, k-sigma on its calibration). Options "
         "given on the command line still win.", rich_help_panel=EXPERT)]


def _print_version(value: bool) -> None:
    if value:
        out.print(f"eagle {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option(
        "--debug", envvar="EAGLE_DEBUG", metavar="",
        help="Show tracebacks on errors (before the command: eagle --debug score …).")] = False,
    version: Annotated[bool, typer.Option(
        "--version", help="Print the version and exit.", is_eager=True, callback=_print_version, metavar="")] = False,
):
    _debug["on"] = debug


@dataclass(frozen=True)
class Only:
    """Which of a settings group's options a command offers (the rest stay at their defaults)."""

    names: tuple[str, ...] = ()
    leave_out: tuple[str, ...] = ()

    def options(self, kind: type) -> list[Option]:
        return [o for o in options_of(kind) if (not self.names or o.name in self.names)
                and o.name not in self.leave_out]


def only(*names: str) -> Only:
    return Only(names=names)


def leave_out(*names: str) -> Only:
    return Only(leave_out=names)


def _parameter(option: Option) -> inspect.Parameter:
    """An option of a settings group as Typer's signature wants it."""
    spec = option.spec
    name = flag(option.name)
    decls = [f"{name}/--no-{option.name.replace('_', '-')}"] if option.hint is bool and option.default else [name]
    if spec is not None and spec.short:
        decls.append(spec.short)
    default = option.default
    if spec is not None and spec.text is not None and not isinstance(default, str):
        default = spec.text(default)
    settings = {"help": option.help, "rich_help_panel": option.panel}
    if option.hint is bool:
        settings["metavar"] = ""  # a flag takes no value
    if spec is not None and spec.envvar:
        settings["envvar"] = spec.envvar
    # Tuples and mixed types are given as text (``9-14``, ``3,1``, ``auto``) and parsed by their declaration.
    given_as_text = get_origin(option.hint) is tuple or (spec is not None and spec.parse is not None)
    annotation = Annotated[str if given_as_text else option.hint, typer.Option(*decls, **settings)]
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _settings_kind(hint: Any) -> tuple[type, Only] | None:
    """(settings class, which options) of a parameter annotated ``Kind`` or ``Annotated[Kind, Only(...)]``."""
    if get_origin(hint) is Annotated:
        kind, *extras = get_args(hint)
        choice = next((e for e in extras if isinstance(e, Only)), Only())
    else:
        kind, choice = hint, Only()
    return (kind, choice) if is_settings(kind) else None


class _Invalid(typer.BadParameter):
    """Values that break their declarations: one line each, already naming their option."""

    def format_message(self) -> str:
        return self.message


def _explicit(context: typer.Context, name: str) -> bool:
    # By name: typer carries its own copy of click, whose enum is not click's.
    return getattr(context.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"


def _built(context: typer.Context, groups: dict[str, tuple[type, Only]], values: dict[str, Any],
           preset: str | None) -> dict[str, Any]:
    """Each settings group built from the option values (and ``preset``'s for options left at their default)."""
    if preset is not None and preset not in EXPERT_PRESETS:
        raise _Invalid(f"Invalid value for '--preset': must be one of {', '.join(EXPERT_PRESETS)}, got {preset!r}.",
                       ctx=context)
    built, problems = {}, []
    for parameter, (kind, choice) in groups.items():
        names = {o.name for o in choice.options(kind)}
        given = {name: values[name] for name in names}
        for name, value in EXPERT_PRESETS.get(preset, {}).items():
            if name in {o.name for o in options_of(kind)} and not (name in names and _explicit(context, name)):
                given[name] = value
        try:
            built[parameter] = build(kind, given)
        except SettingsError as error:
            problems += [p for p in error.problems if p not in problems]
    if problems:
        raise _Invalid("\n".join(f"Invalid value for '{flag(name)}': {problem}." for name, problem in problems),
                       ctx=context)
    return built


#: The parameter Typer hands the click context in (it tells which options were given).
_CONTEXT = "eagle_click_context"


#: What the ``full`` extra brings (the base install scores exported experts only).
FULL_ONLY = {"torch", "torchvision", "sklearn", "skimage", "transformers", "jinja2", "matplotlib", "openai", "onnx",
             "onnxscript"}


def _not_installed(exc: ModuleNotFoundError, command: str) -> EagleError | ModuleNotFoundError:
    """A module of the full install missing on a runtime-only install: say what to install (else re-raise)."""
    top = (exc.name or "").split(".")[0]
    if top not in FULL_ONLY:
        return exc
    return EagleError(f"eagle {command} needs eagle's full install ({top} is not installed): pip install "
                      "'eagle-cli[full]'. The base install scores an exported expert: eagle score --runtime onnx "
                      "--export DIR.")


def command(typer_app: typer.Typer, name: str | None = None):
    """Register ``func`` as a command: its settings groups become options and arrive built; an
    :class:`EagleError` becomes one red line (or, with --json, a JSON document) and exit code 1."""

    def register(func):
        hints = get_type_hints(func, include_extras=True)
        groups, own, generated = {}, [], {}
        for parameter in inspect.signature(func).parameters.values():
            found = _settings_kind(hints[parameter.name])
            if found is None:
                own.append(parameter.replace(annotation=hints[parameter.name]))
                continue
            groups[parameter.name] = found
            for option in found[1].options(found[0]):
                generated.setdefault(option.name, _parameter(option))
        taken = {p.name for p in own}
        parameters = own + [p for n, p in generated.items() if n not in taken]
        parameters.append(inspect.Parameter(_CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

        @functools.wraps(func)
        def wrapper(**values):
            as_json = values.get("json", False)
            context = values.pop(_CONTEXT)
            try:
                built = _built(context, groups, values, values.get("preset"))
                try:
                    return func(**{p.name: values[p.name] for p in own}, **built)
                except ModuleNotFoundError as exc:
                    raise _not_installed(exc, command_name) from None
            except EagleError as exc:
                if _debug["on"]:
                    raise
                if as_json:
                    print(json.dumps(document(command_name, failed=[{"error": str(exc)}]), indent=2))
                err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, markup=True)
                # A setting that breaks its declaration is a usage error wherever it was given.
                raise typer.Exit(2 if isinstance(exc, SettingsError) else 1) from None

        command_name = name or func.__name__.replace("_", "-")
        wrapper.__signature__ = inspect.Signature(parameters)
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # Typer must read the generated signature, not the function's
        return typer_app.command(name, cls=_Command)(wrapper)

    return register


def document(command: str, *, artifacts: list[dict] | None = None, failed: list[dict] | None = None,
             notes: list[str] | None = None, written: list[str] | None = None) -> dict:
    """The one JSON document every command prints with --json."""
    failed = failed or []
    return {"command": command, "ok": not failed, "artifacts": artifacts or [], "failed": failed,
            "notes": notes or [], "written": written or []}


def artifact_entry(ref: ArtifactRef, stage: str | None = None) -> dict:
    return {"kind": ref.kind, "id": ref.id, "path": str(ref.path), "category": ref.category, "stage": stage or ref.kind,
            "reused": ref.reused, "summary": ref.summary}


@dataclass
class Session:
    """Output settings of one command, and what it wrote."""

    command: str
    output: OutputParams = field(default_factory=OutputParams)

    @contextmanager
    def task(self, description: str, total: int) -> Iterator:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn())
        with Progress(*columns, console=err, disable=self.output.quiet, transient=False) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n=1: progress.advance(task, n)

    def context(self, store: StoreParams) -> Context:
        return Context(artifacts=store.artifacts, run=store.run, force=store.force, on_error=store.on_error,
                       reporter=self)

    def report(self, refs: list[ArtifactRef]) -> None:
        if self.output.json:
            print(json.dumps(document(self.command, artifacts=[artifact_entry(r) for r in refs]), indent=2))
            return
        for ref in refs:
            verb = "reused" if ref.reused else "wrote"
            err.print(f"[green]{verb}[/] {ref.kind} [bold]{escape(str(ref.path))}[/]")
            if not self.output.quiet:
                _print_summary(ref)
            for warning in ref.warnings:  # even with --quiet: they say the numbers may not mean what they seem
                err.print(f"  [yellow]warning:[/] {escape(warning)}")


def _print_summary(ref: ArtifactRef) -> None:
    flat = {}
    for key, value in ref.summary.items():
        if key == "warnings":
            continue
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif value is not None:
            flat[key] = value
    err.print("  " + "  ".join(f"{k}={escape(_fmt(v))}" for k, v in flat.items()))


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def main() -> None:
    """Run the CLI: exit 0 ok, 1 user error (one paragraph, no traceback unless --debug), 2 usage error."""
    app()

