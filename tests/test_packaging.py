"""The package as pip builds it: pyproject.toml lists every package folder, and the built wheel holds
every shipped file of rolebench_eval/, tasks/ and judges/ (data, templates, reference tables), with
no warning from our setuptools configuration.

The wheel is built offline (--no-build-isolation: the test environment's setuptools) from a copy of
the source tree, so the checkout gets no build/ or egg-info folder from the test.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> its package in the installed tree (pyproject's package-dir).
FOLDERS = {"rolebench_eval": "rolebench_eval", "tasks": "rolebench_eval/tasks", "judges": "rolebench_eval/judges"}
# Lines of setuptools output that come from our configuration, not from the build machinery.
CONFIG_WARNINGS = ("would be ignored", "absent from the `packages`", "SetuptoolsDeprecationWarning",
                   "data_files", "_IncludePackageDataAbuse", "BuildBackendWarning: Package")


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def _shipped(folder: str) -> list[Path]:
    return [
        path for path in (ROOT / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    ]


def _package_of(folder: Path) -> str:
    relative = folder.relative_to(ROOT)
    return ".".join([FOLDERS[relative.parts[0]].replace("/", "."), *relative.parts[1:]])


def test_pyproject_maps_the_plugin_folders_and_lists_every_package():
    config = _setuptools()
    assert config["package-dir"] == {
        "rolebench_eval": "rolebench_eval", "rolebench_eval.tasks": "tasks", "rolebench_eval.judges": "judges",
    }
    assert config["include-package-data"] is False
    assert not (ROOT / "setup.py").exists()
    folders = sorted({init.parent for folder in FOLDERS for init in (ROOT / folder).rglob("__init__.py")
                      if "__pycache__" not in init.parts})
    missing = [_package_of(folder) for folder in folders if _package_of(folder) not in config["packages"]]
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    stale = [name for name in config["packages"] if name not in {_package_of(f) for f in folders}]
    assert not stale, f"packages listed in pyproject.toml without a folder: {stale}"


@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pytest.importorskip("setuptools")
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", *FOLDERS):
        target = source / name
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, target)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-v", "-w", str(out), "."],
        cwd=source, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = list(out.glob("rolebench_eval-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], done.stdout + done.stderr


def test_wheel_contains_every_shipped_file(built_wheel):
    wheel, _ = built_wheel
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"{FOLDERS[folder]}/{path.relative_to(ROOT / folder).as_posix()}"
                for folder in FOLDERS for path in _shipped(folder)}
    missing = sorted(expected - names)
    assert not missing, f"{len(missing)} file(s) not in the wheel, e.g. {missing[:5]}"
    # Real data, not just code: the plugin manifests, a question file, a reference table, templates.
    for required in ("rolebench_eval/tasks/personagym/tasks.toml", "rolebench_eval/tasks/rolebench/data/LICENSE",
                     "rolebench_eval/reference_tables/opencharacter_table3.json", "rolebench_eval/templates/run.html.j2"):
        assert required in names
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tasks/", "judges/", "tests/"))]
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "rbe = rolebench_eval.cli:main" in entry_points


def test_wheel_build_prints_no_configuration_warning(built_wheel):
    _, output = built_wheel
    found = [line for line in output.splitlines() if any(marker in line for marker in CONFIG_WARNINGS)]
    assert not found, found[:5]
