"""The package works from an installed wheel, not only from the checkout: the word lists the scanner reads are
package data (trojanscope.resources, pyproject.toml's [tool.setuptools.package-data]), and what lies only beside
a checkout (./data next to the repository, static/vendor/) is simply absent there, with clear errors.

A wheel is built from a copy of the project (so the build's build/ and *.egg-info never land in the shared
checkout), installed with ``pip --target`` into a temporary directory, and imported in a subprocess whose
PYTHONPATH puts that directory before the virtualenv's editable install (torch and the rest still come from the
virtualenv)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RESOURCES = ROOT / "src" / "trojanscope" / "resources"
WORD_LISTS = ("neutral_words.txt", "polar_words.txt", "offence_words.txt")
RESOURCE_FILES = (*WORD_LISTS, "VADER-LICENSE.txt")  # the VADER licence travels with polar_words.txt
PIP_ENV = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

# run by the installed copy: the library's own loaders, the checkout finder, the data directory and BertViz's JS
PROBE = r"""
import json, os, sys
import numpy as np
import trojanscope
from trojanscope.analysis import scan
from trojanscope.data.datasets import data_dir
from trojanscope.dirs import checkout_root
from trojanscope.errors import TrojanScopeError
from trojanscope.viz import bertviz_offline

out = {"package": trojanscope.__file__, "scan": scan.__file__, "neutral_path": str(scan.NEUTRAL_WORDS),
       "neutral": scan.neutral_words(), "polar": sorted(scan.polar_words()),
       "checkout": None if checkout_root() is None else str(checkout_root()),
       "vendor_missing": bertviz_offline.vendor_missing()}
try:
    out["data_dir"] = str(data_dir())
except TrojanScopeError as e:
    out["data_dir_error"] = str(e)
os.makedirs(os.path.join("with_data", "data", "sst2"))
os.chdir("with_data")
out["cwd_data_dir"] = str(data_dir())
try:
    bertviz_offline.bertviz_html(np.zeros((1, 1, 2, 2)), ["a", "b"])
except TrojanScopeError as e:
    out["bertviz_error"] = str(e)
print("PROBE " + json.dumps(out))
"""


def _build_isolation() -> list[str]:
    """``--no-build-isolation`` when the virtualenv has the setuptools pyproject.toml asks for (fast, offline); else
    pip's isolated build (which downloads setuptools)."""
    try:
        import setuptools
    except ImportError:
        return []
    major = int(setuptools.__version__.split(".")[0])
    return ["--no-build-isolation"] if major >= 77 else []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    project = tmp / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    out = tmp / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *_build_isolation(), "-q",
                           "-w", str(out), str(project)], capture_output=True, text=True, timeout=300, env=PIP_ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("trojanscope-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site") / "target"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=300,
                          env=PIP_ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return target


def test_the_wheel_holds_the_word_lists(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "trojanscope/resources/__init__.py" in names
        for name in RESOURCE_FILES:
            member = f"trojanscope/resources/{name}"
            assert member in names, sorted(n for n in names if "resources" in n)
            assert zf.read(member) == (RESOURCES / name).read_bytes(), name
        assert not any(n.startswith(("static/", "assets/", "trojanscope/static/")) for n in names)  # app-only files


def test_the_installed_wheel_reads_its_own_word_lists(installed, tmp_path):
    from trojanscope.analysis.scan import neutral_words, polar_words
    from trojanscope.dirs import checkout_root

    assert checkout_root() == ROOT  # this process: the editable install, i.e. the checkout
    cwd = tmp_path / "nested" / "cwd"  # no ./data here, nor a ../shared/data
    cwd.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("TROJANSCOPE_DATA_DIR", "PYTHONSAFEPATH")}
    env["PYTHONPATH"] = str(installed)  # before site-packages, where the editable install's .pth points at src/
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("PROBE "))[6:])

    target = installed.resolve()
    for key in ("package", "scan", "neutral_path"):  # the wheel's copy, not the checkout's
        assert Path(out[key]).resolve().is_relative_to(target), (key, out[key])
    assert out["checkout"] is None
    assert out["neutral"] and out["neutral"] == neutral_words()
    assert out["polar"] and set(out["polar"]) == polar_words()
    for name in RESOURCE_FILES:
        assert (target / "trojanscope" / "resources" / name).read_bytes() == (RESOURCES / name).read_bytes()
    # no checkout: the data directory is looked for in the working directory only, and its absence is an error
    # that says what to do; ./data works
    assert "data_dir" not in out, out.get("data_dir")
    assert "TROJANSCOPE_DATA_DIR" in out["data_dir_error"]
    assert Path(out["cwd_data_dir"]) == (cwd / "with_data" / "data").resolve()
    # BertViz's JavaScript is the checkout's: absent, with a clear error rather than a broken page
    assert set(out["vendor_missing"]) == {"require.js", "d3.min.js", "jquery.min.js"}
    assert "static/vendor" in out["bertviz_error"] and "checkout" in out["bertviz_error"]
