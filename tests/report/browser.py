"""Headless Chromium (Debian's package) for looking at the report as a person would."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=3000"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Chromium is needed for the report tests: apt-get install chromium (scripts/test.sh does).")
    return path


def dump_dom(page: Path, profile: Path, size: str = "1280,1600") -> str:
    result = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}", "--dump-dom",
                             page.as_uri()], capture_output=True, text=True, timeout=120)
    return result.stdout


def screenshot(page: Path, out: Path, profile: Path, size: str = "1280,1600") -> Path:
    subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                    f"--screenshot={out}", page.as_uri()], capture_output=True, timeout=120)
    return out
