"""Helpers shared by the benchmark scripts: which lamina source was measured, and on what machine."""
from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

import lamina


def lamina_source() -> str:
    """The lamina that was imported: its folder, git commit (+dirty) when it is a checkout, and a
    hash of its .py files, so figures can be matched to the exact code even mid-edit."""
    folder = Path(lamina.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=folder,
                                capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "not a git checkout"
    return f"lamina {lamina.__version__} from {folder} ({commit}; source sha256 {digest.hexdigest()[:12]})"


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
