"""Write docs/cli.md from the commands' own help (`python scripts/cli_docs.py`); a test checks it is current."""

from __future__ import annotations

import sys
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
    return str(text).replace("|", "\\|").replace("\n", " ").replace("[bold]", "").replace("[/]", "")


def render() -> str:
    lines = ["# eagle command reference", "",
             "Generated from the commands' help by `python scripts/cli_docs.py`; `eagle COMMAND --help` says the same.",
             ""]
    for path, command in _commands(typer.main.get_command(app)):
        lines += [f"## eagle {' '.join(path)}", "", _cell(command.help or ""), ""]
        params = [p for p in command.params if p.name != "help"]
        arguments = [p for p in params if p.param_type_name == "argument"]
        options = [p for p in params if p.param_type_name == "option"]
        for argument in arguments:
            lines.append(f"- `{argument.name.upper()}`: {_cell(getattr(argument, 'help', '') or '')}")
        if arguments:
            lines.append("")
        if options:
            lines += ["| option | default | meaning |", "|---|---|---|"]
            for option in options:
                names = ", ".join(f"`{o}`" for o in (*option.opts, *option.secondary_opts))
                default = "" if option.default is None or option.is_flag and option.default is False else option.default
                envvar = f" (env `{option.envvar}`)" if option.envvar else ""
                lines.append(f"| {names} | {_cell(default)} | {_cell(option.help or '')}{envvar} |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    DOCS.write_text(render())
    print(f"wrote {DOCS}", file=sys.stderr)
