"""Careless run configs: each is one usage error (exit 2) that names the file, the line and what to do."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from eagle_cli.cli import app

#: (file bytes, what the message says): before, a traceback, a silent last-wins, or a wrong hint.
CARELESS = [
    (b"data: caf\xe9\n", r"is not UTF-8 text \(byte 0xe9 on line 1\); save it as UTF-8"),
    (b"data: d\nrun: first\nrun: second\n", r"line 3: the key 'run' is given twice \(first on line 2\)"),
    (b"a: &a [x, x]\nb: &b [*a, *a]\ndata: *b\n", r"line 2: aliases \(\*name\) are not accepted"),
    (b"data: d\nthreshold: 5\n", r"threshold: is a section; give it settings of the threshold stage, like "
                                 r"threshold: \{\w+: \.\.\.\}, not 5"),
    (b"data: [d\n", r"is not valid YAML \(line 2: "),
]


@pytest.mark.parametrize("text,message", CARELESS)
def test_a_careless_config_is_one_usage_error(tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_bytes(text)
    result = CliRunner().invoke(app, ["run", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {config}:")
    assert re.search(message, result.output), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "artifacts").exists()


def test_a_mapping_under_a_name_that_is_also_a_setting_still_sets_that_section(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: d\ncalibration: {nope: 1}\n")
    result = CliRunner().invoke(app, ["run", str(config)], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "nope" in result.output and "calibration" in result.output


def test_a_bad_set_value_is_one_usage_error(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("data: d\n")
    result = CliRunner().invoke(app, ["run", str(config), "--set", "run=[a"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "--set run: '[a' is not valid YAML (line 1:" in result.output
