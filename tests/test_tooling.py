"""The repository's own guarantees: one version source, a full lock of both environments, and the `make test` gate.

Conventions: paths are relative to the repository root (ROOT); requirement names are compared in their PEP 503
normal form (lower case, runs of ``-_.`` as one ``-``); a pinned version's local label (``+cpu``) is dropped.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

import emoca_contract

ROOT = Path(__file__).resolve().parents[1]
REQ = ROOT / "requirements"
VERSION = emoca_contract.__version__
# Requirement files installed with `-c constraints.txt` (the backend + dev environment).
LOCKED_FILES = ("backend.txt", "dev.txt", "nodeps.txt")
NOT_LOCKED = {"pip", "emoca-blender"}  # the venv's own installer; the project itself, if installed
pytestmark = pytest.mark.torch  # checks the backend + dev environment (setuptools, the lock), not Blender 4.2's


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a requirements file."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def pins(path: Path) -> dict[str, str]:
    """{normal name: version} of a file whose every line is ``name==version`` (asserted)."""
    out = {}
    for line in requirement_lines(path):
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", line)
        assert m, f"{path.name}: {line!r} is not pinned as name==version"
        assert normal(m[1]) not in out, f"{path.name}: {m[1]} pinned twice"
        out[normal(m[1])] = m[2]
    return out


def requirement_name(line: str) -> str:
    return normal(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0])


def installed() -> dict[str, str]:
    """{normal name: public version} of every distribution installed in the running environment (its
    site-packages; not copies vendored inside a package, such as setuptools/_vendor)."""
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {
        normal(d.metadata["Name"]): d.version.split("+", 1)[0]
        for d in importlib.metadata.distributions(path=site)
        if normal(d.metadata["Name"]) not in NOT_LOCKED
    }


# ------------------------------------------------------------------------------------------------ version
def test_the_version_source_is_a_semantic_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", VERSION), VERSION  # Blender's manifest wants semver


def test_pyproject_takes_its_version_from_the_contract():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "emoca_contract.__version__"}
    # the build backend's own reading of the metadata resolves to the source
    from setuptools.config.pyprojecttoml import read_configuration

    assert read_configuration(ROOT / "pyproject.toml", expand=True)["project"]["version"] == VERSION


def test_extension_manifest_states_the_source_version():
    manifest = tomllib.loads((ROOT / "blender_manifest.toml").read_text(encoding="utf-8"))
    assert manifest["version"] == VERSION


def test_backend_version_is_the_contract_version():
    import backend

    assert backend.__version__ is emoca_contract.__version__


def test_no_module_states_a_version_of_its_own():
    """Only emoca_contract assigns ``__version__``; the add-on has no ``bl_info`` (the manifest is its metadata)."""
    assigning = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        if path.relative_to(ROOT).parts[0] not in ("backend", "emoca_blender", "emoca_contract"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                names = {t.id for t in node.targets if isinstance(t, ast.Name)}
                if names & {"__version__", "bl_info"}:
                    assigning.append(str(path.relative_to(ROOT)))
    assert assigning == ["emoca_contract/__init__.py"]


def test_docs_name_the_source_version():
    stated = {
        (str(path.relative_to(ROOT)), v)
        for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        if path.is_file()
        for v in re.findall(r"(?:emoca_blender-|\"backend_version\": \")(\d+\.\d+\.\d+)", path.read_text("utf-8"))
    }
    assert {p for p, _ in stated} >= {"docs/install.md", "docs/formats.md"}  # the zip's name, a take's header
    assert {v for _, v in stated} == {VERSION}, sorted(stated)


# ------------------------------------------------------------------------------------------------ pins
def test_constraints_pin_every_requirement():
    lock = pins(REQ / "constraints.txt")
    for name in LOCKED_FILES:
        for line in requirement_lines(REQ / name):
            req = requirement_name(line)
            assert req in lock, f"{name}: {line!r} is not pinned in constraints.txt"
            if "==" in line:
                assert line.split("==", 1)[1].strip() == lock[req], f"{name}: {line!r} disagrees with the lock"
    assert lock["torch"] == "2.13.0"  # no local label: the CPU wheel on these machines, never a CUDA download


def test_legacy_environment_is_fully_pinned_on_blender_4_2():
    lock = pins(REQ / "bpy42.txt")
    assert lock["bpy"].startswith("4.2.") and "numpy" in lock and "pytest" in lock


def test_the_running_environment_is_exactly_the_lock():
    """Every installed distribution is pinned at its installed version, and every pin is installed."""
    lock = pins(REQ / "constraints.txt")
    have = installed()
    assert {k: v for k, v in have.items() if lock.get(k) != v} == {}, "installed but not locked (or other version)"
    assert sorted(set(lock) - set(have)) == [], "locked but not installed"


def test_every_pip_call_of_the_makefile_uses_a_lock():
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^PIP_FLAGS :=.*-c requirements/constraints\.txt", text, re.M)
    calls = [line.strip() for line in text.splitlines() if "pip install" in line]
    assert len(calls) >= 3
    for call in calls:
        assert "$(PIP_FLAGS)" in call or "-r requirements/bpy42.txt" in call, call


# ------------------------------------------------------------------------------------------------ the gate
def dry_run(target: str) -> list[str]:
    out = subprocess.run(
        ["make", "-n", "-s", target, f"PY={sys.executable}", "PYTHON=python3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def test_make_test_runs_format_lint_types_and_coverage_in_order():
    lines = dry_run("test")
    steps = ["-m ruff format --check .", "-m ruff check .", "-m mypy", "-m pytest --cov"]
    at = [next((i for i, line in enumerate(lines) if step in line), -1) for step in steps]
    assert -1 not in at and at == sorted(at), (steps, lines)
    legacy = [line for line in lines if "pytest" in line and "blender and not torch" in line]
    assert len(legacy) == 1


def test_make_test_fast_skips_slow_tests_and_the_legacy_environment():
    lines = dry_run("test-fast")
    runs = [line for line in lines if "-m pytest" in line]
    assert len(runs) == 1 and '-m "not slow"' in runs[0] and "--cov" not in runs[0]
    assert not any("venv-bpy42" in line for line in lines)


def test_complexity_limit_and_its_exceptions_exist():
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]["lint"]
    assert "C90" in lint["select"] and 8 <= lint["mccabe"]["max-complexity"] <= 15
    for pattern, codes in lint["per-file-ignores"].items():
        if "C901" in codes:  # an exception for a file that no longer exists would hide a new one there
            assert sorted(ROOT.glob(pattern)), pattern


def test_mypy_overrides_name_real_modules():
    overrides = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]["overrides"]
    modules = [m for o in overrides for m in ([o["module"]] if isinstance(o["module"], str) else o["module"])]
    assert "emoca_blender.properties" in modules  # bpy property annotations (valid-type)
    for module in modules:
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


# ------------------------------------------------------------------------------------------------ the import graph
PACKAGES = ("backend", "emoca_blender", "emoca_contract")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages (a package is its ``__init__``)."""
    out = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that module ``name`` imports anywhere in its file (lazy imports in functions too:
    a circle through a lazy import is still a circle in the design)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                part = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    part.append(w)
                    if w == v:
                        break
                if len(part) > 1:
                    circles.append(sorted(part))
    return circles


def test_the_circle_finder_finds_a_circle_and_only_circles():
    assert import_circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_circles({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_no_module_imports_itself_back_through_others():
    """The rooms are layered (docs/architecture.md): no import circle anywhere, lazy imports included."""
    modules = project_modules()
    assert {"backend.capture.pipeline", "emoca_blender.rig", "emoca_contract.take"} <= set(modules)
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert "emoca_blender.rig_parts" in graph["emoca_blender.open_rig"]  # relative imports are followed
    assert import_circles(graph) == []
