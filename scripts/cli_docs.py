"""Write docs/cli.md from the commands' own help (`python scripts/cli_docs.py`); a test checks it is current."""

from __future__ import annotations

import inspect
import sys
import typing
from pathlib import Path

import typer

from eagle_cli.cli import app

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands(group, prefix=()):
    for name, command in sorted(group.commands.items()):
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _help(text: str) -> list[str]:
    """A command's help as Markdown: its paragraphs, with each "Example:" as a shell block."""
    lines = []
    for paragraph in inspect.cleandoc(text or "").split("\n\n"):
        paragraph = " ".join(paragraph.split())
        if paragraph.startswith("Example:"):
            lines += ["```bash", paragraph.removeprefix("Example:").strip(), "```", ""]
        elif paragraph:
            lines += [_cell(paragraph), ""]
    return lines


def _range(option) -> str:
    """The choices of a Literal option, or the bounds of a numeric one."""
    choices = typing.get_args(option.type_descriptor.annotation) if typing.get_origin(
        option.type_descriptor.annotation) is typing.Literal else ()
    if choices:
        return f" One of: {', '.join(map(str, choices))}."
    bounds = [f"≥ {option.min}" if option.min is not None else "", f"≤ {option.max}" if option.max is not None else ""]
    return f" ({', '.join(b for b in bounds if b)})" if any(bounds) else ""


def _options(params) -> list[str]:
    options = [p for p in params if p.param_type_name == "option" and p.name != "help"]
    if not options:
        return []
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for option in options:
        names = ", ".join(f"`{o}`" for o in (*option.opts, *option.secondary_opts))
        default = "" if option.default is None or option.is_flag and option.default is False else option.default
        envvar = f" (env `{option.envvar}`)" if option.envvar else ""
        lines.append(f"| {names} | {_cell(default)} | {_cell(option.help or '')}{_range(option)}{envvar} |")
    return lines + [""]


def render() -> str:
    root = typer.main.get_command(app)
    lines = ["# eagle command reference", "",
             "Generated from the commands' help by `python scripts/cli_docs.py`; `eagle COMMAND --help` says the same.",
             "A config file for `eagle run` takes the same settings, named as the options are without the dashes "
             "(`--coreset-ratio` is `coreset_ratio:`).", "", "## eagle", "", "Options before the command:", ""]
    lines += _options([p for p in root.params if p.name not in ("install_completion", "show_completion")])
    for path, command in _commands(root):
        lines += [f"## eagle {' '.join(path)}", ""] + _help(command.help)
        params = [p for p in command.params if p.name != "help"]
        arguments = [p for p in params if p.param_type_name == "argument"]
        for argument in arguments:
            lines.append(f"- `{argument.name.upper()}`: {_cell(getattr(argument, 'help', '') or '')}")
        if arguments:
            lines.append("")
        lines += _options(params)
    return "\n".join(lines)


if __name__ == "__main__":
    DOCS.write_text(render())
    print(f"wrote {DOCS}", file=sys.stderr)
