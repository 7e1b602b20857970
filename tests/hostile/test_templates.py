"""Hostile and careless prompt templates: each ends in one message naming its file and part, within 5 s
and 200 MB, before any work is published."""

from __future__ import annotations

import time
import tracemalloc
from importlib import resources

import pytest
import yaml
from typer.testing import CliRunner

from eagle_cli.cli import app
from eagle_cli.errors import ParameterError
from eagle_cli.prompts.templates import Templates

SHIPPED = yaml.safe_load(resources.files("eagle_cli.prompts").joinpath("templates", "default.yaml").read_text())

#: (part, text, what the message says): every row ended in a traceback, a hang or gigabytes before.
HOSTILE = [
    ("query", "{{ category * 500000000 }}", "repeating a value"),
    ("query", "{{ lipsum(1000000) }}", r"\['lipsum'\] that it is not given"),
    ("query", "{% include 'other.yaml' %}", r"\{% include %\} is not available"),
    ("query", "{% import 'macros' as m %}", r"\{% import %\} is not available"),
    ("query", "{% extends 'base' %}", r"\{% extends %\} is not available"),
    ("query", "{{ category|attr('nope') }}", "could not be filled in"),
    ("query", "{{ range(100000000)|list }}", "a number above 1,000,000"),
    ("query", "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "calls itself without end"),
    ("verdict", "{{ options|length }} options", r"\['options'\] that it is not given"),
    ("boxes", "{{ question }}", r"\['question'\] that it is not given"),
    ("heatmap", "{% for o in options %}{{ o }}{% endfor %}", r"\['options'\] that it is not given"),
    ("query", "{% set r = range(99999) %}{% for i in r %}{% for j in r %}{% endfor %}{% endfor %}",
     "longer than 2 s"),
    ("query", "{% macro f(s, n) %}{{ f(s ~ s, n - 1) if n else s }}{% endmacro %}{{ f('x', 40) }}", "was built"),
    ("query", "{{ category|center(999999999) }}", "a number above"),
    ("query", "{{ '%999999999s' % category }}", "format width"),
    ("query", "{{ '{:>999999999}'.format(category) }}", "format width"),
    ("query", "{{ range(99999)|join(knowledge * 100) }}", "join would build"),
    ("query", "{{ (knowledge * 1000)|replace('', knowledge * 1000) }}", "replace would build"),
    ("query", "{{ 2 ** 1000000000 }}", "a power with exponent"),
    ("query", "{{ category.ljust(999999999) }}", "a number above"),
    ("query", "{% for i in range(99999) %}{{ knowledge }}{% endfor %}", "output passed 1,000,000 characters"),
    ("query", "{{ 1 / 0 }}", "ZeroDivisionError"),
]


@pytest.mark.parametrize("part,text,message", HOSTILE)
def test_a_hostile_template_stops_with_one_message_in_bounded_time_and_memory(part, text, message):
    source = {**SHIPPED, part: text}
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(ParameterError, match=rf"Template hostile.yaml, part '{part}'.*{message}"):
            Templates(source, "hostile.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 5
    assert peak < 200e6


@pytest.mark.parametrize("text,message", [
    ("a: &a ['x', 'x']\nb: &b [*a, *a]\ninstruction: *b\n", r"aliases \(\*name\) are not accepted"),
    ("query: one\nquery: two\n", "the key 'query' is given twice"),
    (b"query: caf\xe9\n", r"not UTF-8 text \(byte 0xe9 on line 1\)"),
    ("- a list\n", "must be a YAML mapping"),
])
def test_a_template_file_that_is_not_plain_yaml_is_refused_when_read(tmp_path, text, message):
    path = tmp_path / "t.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ParameterError, match=message):
        Templates.load(path)


def test_shared_wording_still_renders_as_written():
    source = {**SHIPPED, "query": "{{ category|upper }} at {{ '%.2f'|format(score) }}: {{ knowledge|wordcount }} "
                                  "words, {{ range(3)|join(',') }}"}
    text = Templates(source, "ok.yaml").render("query", category="washer", score=1.234, knowledge="two words",
                                               verdict="normal", tau=1, s_max=2, n_boxes=0, shots=0)
    assert text == "WASHER at 1.23: 2 words, 0,1,2"


def test_a_hostile_template_on_the_command_line_is_one_error_line_and_publishes_nothing(washer_scores, tmp_path):
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump({**SHIPPED, "verdict": "{{ category * 500000000 }}"}))
    store = washer_scores.path.parents[3]
    before = sorted(store.rglob("manifest.json"))
    result = CliRunner().invoke(app, ["prompt", "--artifacts", str(store), "--run", washer_scores.path.parents[2].name,
                                      "--category", "washer", "--template", str(path)])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error: Template") and "part 'verdict'" in result.output
    assert "Traceback" not in result.output
    assert sorted(store.rglob("manifest.json")) == before
