"""The package's layers are a contract: cli > jobs > tasks > analysis/defenses > training > attacks > models >
data > core (pyproject.toml's [tool.importlinter]), checked by import-linter, with no import of the CLI from
the library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_no_module_imports_from_a_layer_above_its_own():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache", "--config", str(SRC.parent / "pyproject.toml")], cwd=SRC,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "1 kept, 0 broken" in proc.stdout


def test_only_main_imports_the_cli():
    """Read from the source (function-local imports included): nothing under src/trojanscope but the CLI itself
    and ``__main__`` names ``trojanscope.cli``."""
    offenders = []
    for path in (SRC / "trojanscope").rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("trojanscope/cli/") or rel == "trojanscope/__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                     if isinstance(node, ast.ImportFrom) else [])
            if any(n == "trojanscope.cli" or n.startswith("trojanscope.cli.") for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert not offenders, offenders
