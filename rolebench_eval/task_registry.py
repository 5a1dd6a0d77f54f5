"""Discovering task plugins without importing them.

A task plugin is a folder with a `tasks.toml` that names its tasks, their factories
("module:callable", relative to the folder) and optional groups. Folders are found in:
1. the built-in `tasks/` folder (installed as `rolebench_eval.tasks`);
2. `--include-path DIR` and the `RBE_TASK_PATH` environment variable (os.pathsep separated);
   DIR is a plugin folder or a folder of plugin folders;
3. installed packages that declare an entry point in the group `rolebench_eval.tasks` whose
   value is a package containing a `tasks.toml`.
Code is imported only when a task is built, so `rbe ls` stays fast and one broken plugin cannot
break the others.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rolebench_eval.errors import DataError, UsageError, unknown

if TYPE_CHECKING:
    from rolebench_eval.task_api import RunSettings, Task

ENTRY_POINT_GROUP = "rolebench_eval.tasks"
TASK_PATH_ENV = "RBE_TASK_PATH"
MANIFEST_NAME = "tasks.toml"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: str
    description: str
    factory: str
    folder: Path
    package: str | None  # importable package of the folder, when it has one
    origin: str  # "builtin", "path:<dir>" or "entry-point:<name>"
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskRegistry:
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    groups: dict[str, list[str]] = field(default_factory=dict)

    def add_folder(self, folder: Path, package: str | None, origin: str) -> None:
        manifest = folder / MANIFEST_NAME
        try:
            data = tomllib.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise DataError(f"task plugin {manifest}: {exc}") from exc
        for number, entry in enumerate(data.get("task", []), start=1):
            for required in ("name", "factory"):
                if required not in entry:
                    raise DataError(f"{manifest}: [[task]] number {number} has no {required!r}")
            name = entry["name"]
            if name in self.tasks and self.tasks[name].folder != folder:
                raise DataError(
                    f"task {name!r} is defined twice: in {self.tasks[name].folder} and {folder}"
                )
            self.tasks[name] = TaskSpec(
                name=name,
                version=str(entry.get("version", "0")),
                description=entry.get("description", ""),
                factory=entry["factory"],
                folder=folder,
                package=package,
                origin=origin,
                config=dict(entry),
            )
        for group, members in data.get("groups", {}).items():
            self.groups[group] = list(members)

    def resolve(self, names: Iterable[str]) -> list[TaskSpec]:
        """Task specs for task and group names, in order, without duplicates."""
        resolved: list[TaskSpec] = []
        for name in names:
            if name in self.groups:
                members = self.groups[name]
            elif name in self.tasks:
                members = [name]
            else:
                raise unknown("task", name, [*self.tasks, *self.groups])
            for member in members:
                if member not in self.tasks:
                    raise DataError(f"group {name!r} names unknown task {member!r}")
                if self.tasks[member] not in resolved:
                    resolved.append(self.tasks[member])
        if not resolved:
            raise UsageError("--tasks: no task given")
        return resolved


def _plugin_folders(root: Path) -> list[Path]:
    if (root / MANIFEST_NAME).is_file():
        return [root]
    return sorted(p.parent for p in root.glob(f"*/{MANIFEST_NAME}"))


def discover(include_paths: Iterable[str] = ()) -> TaskRegistry:
    registry = TaskRegistry()
    builtin = Path(importlib.import_module("rolebench_eval.tasks").__path__[0])
    for folder in _plugin_folders(builtin):
        registry.add_folder(folder, f"rolebench_eval.tasks.{folder.name}", "builtin")
    extra = [p for p in os.environ.get(TASK_PATH_ENV, "").split(os.pathsep) if p]
    for raw in [*extra, *include_paths]:
        root = Path(raw).expanduser()
        if not root.is_dir():
            raise UsageError(f"--include-path / {TASK_PATH_ENV}: not a folder: {raw}")
        folders = _plugin_folders(root)
        if not folders:
            raise UsageError(f"--include-path {raw}: no {MANIFEST_NAME} in it or its subfolders")
        for folder in folders:
            registry.add_folder(folder, None, f"path:{folder}")
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        module = importlib.import_module(entry_point.value)
        folder = Path(module.__path__[0]) if hasattr(module, "__path__") else Path(module.__file__).parent
        registry.add_folder(folder, module.__name__, f"entry-point:{entry_point.name}")
    return registry


def _package_for_folder(spec: TaskSpec) -> str:
    if spec.package:
        return spec.package
    # An external folder becomes an importable package under a private name, so that its
    # modules can import each other relatively.
    name = f"rbe_plugin_{abs(hash(str(spec.folder))):x}"
    if name not in sys.modules:
        init = spec.folder / "__init__.py"
        if init.exists():
            module_spec = importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[str(spec.folder)]
            )
        else:  # a plain folder of modules works like a namespace package
            module_spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            module_spec.submodule_search_locations = [str(spec.folder)]
        if module_spec is None:
            raise DataError(f"cannot import task plugin folder {spec.folder}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        if module_spec.loader is not None:
            module_spec.loader.exec_module(module)
    return name


def build_task(spec: TaskSpec, settings: RunSettings) -> Task:
    module_name, _, attribute = spec.factory.partition(":")
    if not attribute:
        raise DataError(f"{spec.folder / MANIFEST_NAME}: factory {spec.factory!r} is not 'module:callable'")
    package = _package_for_folder(spec)
    try:
        module = importlib.import_module(f"{package}.{module_name}")
        factory = getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise DataError(f"task {spec.name}: cannot load factory {spec.factory!r}: {exc}") from exc
    return factory(spec, settings)
