"""Measuring a child process: wall time and its own peak RSS."""

from __future__ import annotations

import subprocess
import sys
import time


def measured(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one child process (GNU time reads its own child only)."""
    start = time.perf_counter()
    out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if out.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return seconds, int(out.stderr.strip().splitlines()[-1]) / 1024, out.stdout
