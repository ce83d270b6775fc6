"""What a newcomer meets: the README's Python snippets run as written, its set-up and test commands
are CI's, and the test tiers work as the README says.

Snippets: every ```python block of README.md, found anew at each collection (a new one is tested
without touching this file). Each runs on its own in a fresh interpreter on CPU, so it must define
everything it uses (imports, ``device``, data). Without TRITON_INTERPRET the fused blocks take their
PyTorch reference path on CPU, which keeps full-size examples fast. A block whose first line starts
with ``# GPU only`` (NCCL, CUDA graphs) is only compiled.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GPU_ONLY = "# GPU only"


def readme_blocks(section: str | None = None) -> list[tuple[str, int, str]]:
    """(language, line of the opening fence, code) of every fenced block of README.md, or of its
    ``## section``."""
    text = README.read_text()
    first = 1
    if section is not None:
        begin = text.index(f"\n## {section}\n") + 1
        end = text.find("\n## ", begin)
        first += text[:begin].count("\n")
        text = text[begin:end if end >= 0 else None]
    blocks, lang, start, body = [], None, 0, []
    for i, line in enumerate(text.splitlines(), first):
        if line.startswith("```"):
            if lang is None:
                lang, start, body = line[3:].strip(), i, []
            else:
                blocks.append((lang, start, "\n".join(body) + "\n"))
                lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README.md: the code block opened at line {start} is not closed"
    return blocks


PYTHON = [(line, code) for lang, line, code in readme_blocks() if lang == "python"]
RUN = [pytest.param(code, id=f"README.md:{line}") for line, code in PYTHON if not code.startswith(GPU_ONLY)]
GPU = [pytest.param(code, id=f"README.md:{line}") for line, code in PYTHON if code.startswith(GPU_ONLY)]


def test_every_python_block_is_fenced_as_python():
    """A block fenced as ```py or ```Python would silently escape the snippet tests."""
    odd = [(line, lang) for lang, line, _ in readme_blocks() if lang.lower().startswith("py") and lang != "python"]
    assert not odd, f"README.md: fence these (line, language) blocks as ```python: {odd}"
    assert RUN, "no runnable python snippet found in README.md"


@pytest.mark.parametrize("code", RUN)
def test_readme_snippet_runs(code, tmp_path):
    script = tmp_path / "snippet.py"
    script.write_text(code)
    # The reference path on CPU (the interpreter would take minutes at 224x224), this checkout's package.
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FUSED_INCEPTION_BACKEND")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, f"the snippet failed (it must run on its own, as written):\n{r.stderr[-4000:]}"


@pytest.mark.parametrize("code", GPU)
def test_gpu_only_readme_snippet_compiles(code):
    compile(code, "README.md snippet", "exec")


# -- install = CI ----------------------------------------------------------------------------------
def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt pins exact versions: {line}"
            pins[req.name.lower()] = spec.version
    return pins


def test_readme_set_up_and_test_commands_are_what_ci_runs():
    setup, test = [code.strip() for lang, _, code in readme_blocks("The two commands") if lang == "bash"]
    ci = (ROOT / ".ci" / "run").read_text()
    install = 'pip install -c constraints.txt -e ".[test,bench]"'
    assert setup.startswith(install + " && "), setup
    assert f"python -m {install}" in ci.replace("--quiet --disable-pip-version-check ", "")
    assert test == "ruff check . && python -m pytest -q"
    assert f"\n{test} || exit $?\n" in ci
    assert "\npython -m pytest -q -m slow || [ $? -eq 5 ]\n" in ci


def test_constraints_pin_every_direct_requirement_inside_pyproject_ranges():
    """The pinned set is one point of the supported ranges: the README's install, CI's and the
    ranges a user of the package gets cannot drift apart."""
    tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in ("test", "bench") for r in project["optional-dependencies"][extra]]
    pins = _pins()
    for req in reqs:
        name = req.name.lower()
        assert name in pins, f"constraints.txt does not pin {name}"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"


# -- the test tiers (tests/conftest.py, pyproject.toml's addopts) ----------------------------------
TIER_TESTS = '''
import pytest


@pytest.mark.fast_cases("b")
@pytest.mark.parametrize("x", ["a", "b", "c"])
def test_matrix(x):
    pass


@pytest.mark.gpu
def test_on_gpu():
    assert False, "ran without a GPU"


def test_skips_with_its_reason():
    pytest.skip("a reason of its own")
'''


def _pytest_in(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def tier_project(tmp_path):
    """A copy of this repository's pytest set-up (pyproject.toml, tests/conftest.py) around three tests."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "tests").mkdir()
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "tests")
    (tmp_path / "tests" / "test_tiers.py").write_text(TIER_TESTS)
    return tmp_path


def test_default_tier_keeps_the_fast_cases_and_slow_tier_the_rest(tier_project):
    default = _pytest_in(tier_project, "-v")
    out = default.stdout
    assert "test_matrix[b] PASSED" in out and "test_matrix[a]" not in out and "test_matrix[c]" not in out, out
    assert "2 deselected" in out, out
    assert "skipped 1: tests/test_tiers.py:" in out and ": a reason of its own" in out, out
    if not torch.cuda.is_available():
        assert default.returncode == 0, out
        assert "1 GPU-only test skipped: no CUDA device" in out, out
    slow = _pytest_in(tier_project, "-v", "-m", "slow")
    assert slow.returncode == 0, slow.stdout
    assert "test_matrix[a] PASSED" in slow.stdout and "test_matrix[c] PASSED" in slow.stdout, slow.stdout
    assert "3 deselected" in slow.stdout, slow.stdout


def test_a_fast_case_that_names_no_case_is_an_error(tier_project):
    """A renamed case would otherwise leave its feature out of the default tier unnoticed."""
    test_file = tier_project / "tests" / "test_tiers.py"
    test_file.write_text(TIER_TESTS.replace('fast_cases("b")', 'fast_cases("bee")'))
    r = _pytest_in(tier_project, "-q")
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, r.stdout + r.stderr
    assert re.search(r"fast_cases \['bee'\] name no case; cases: \['a', 'b', 'c'\]", r.stderr), r.stderr
