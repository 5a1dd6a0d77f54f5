"""Discovering task plugins without importing them.

A task plugin is a folder with a `tasks.toml` that names its tasks, their factories
("module:callable", relative to the folder) and optional groups. Folders are found in:
1. the built-in `tasks/` folder (installed as `rolebench_eval.tasks`);
2. `--include-path DIR` and the `RBE_TASK_PATH` environment variable (os.pathsep separated);
   DIR is a plugin folder or a folder of plugin folders;
3. installed packages that declare an entry point in the group `rolebench_eval.tasks` whose
   value is a package containing a `tasks.toml`.
Code is imported only when a task is built, so `rbe ls` stays fast and one broken plugin cannot
break the others: a folder whose `tasks.toml` cannot be read (or an entry point that cannot be
imported) is recorded in `TaskRegistry.broken` with its error, and the other plugins still load.

Task and group names are matched in any case and with '_' for '-' (rolebench_eval.naming); a task
may declare other names it answers to (`aliases = [...]`), and the --protocol / --roleplay-template
names it takes (`protocols`, `roleplay_templates`), which `canonical_setting` spells its way.

A task may declare the `--task-option` keys it reads (`options = ["key", ...]` in tasks.toml);
a key that none of the chosen tasks declares is refused before any call. A task without an
`options` list (an older plugin) accepts any key.
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

from rolebench_eval import naming
from rolebench_eval.errors import DataError, RbeError, UsageError, did_you_mean

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
    # Plugins that could not be read: where (a tasks.toml or an entry point) -> the one-line error,
    # which names that place itself.
    broken: dict[str, str] = field(default_factory=dict)

    def add_folder(self, folder: Path, package: str | None, origin: str) -> None:
        """Add a plugin folder's tasks and groups, all or nothing; a broken folder is recorded
        in `broken` instead, so that it cannot hide the other plugins."""
        manifest = folder / MANIFEST_NAME
        try:
            specs, groups = self._read_folder(folder, package, origin)
        except DataError as exc:
            self.broken[str(manifest)] = str(exc)
            return
        self.tasks.update(specs)
        self.groups.update(groups)

    def _read_folder(
        self, folder: Path, package: str | None, origin: str
    ) -> tuple[dict[str, TaskSpec], dict[str, list[str]]]:
        manifest = folder / MANIFEST_NAME
        try:
            data = tomllib.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise DataError(f"task plugin {manifest}: {exc}") from exc
        entries = data.get("task", [])
        if not isinstance(entries, list):
            raise DataError(f"{manifest}: 'task' must be a list of [[task]] tables")
        specs: dict[str, TaskSpec] = {}
        for number, entry in enumerate(entries, start=1):
            if not isinstance(entry, dict):
                raise DataError(f"{manifest}: [[task]] number {number} is not a table")
            for required in ("name", "factory"):
                if not isinstance(entry.get(required), str):
                    raise DataError(f"{manifest}: [[task]] number {number} has no {required!r} string")
            for listed in ("options", "aliases", "protocols", "roleplay_templates"):
                value = entry.get(listed)
                if value is not None and not (isinstance(value, list) and all(isinstance(o, str) for o in value)):
                    raise DataError(f"{manifest}: [[task]] {entry['name']!r}: {listed!r} must be a list of strings")
            name = entry["name"]
            if name in self.tasks and self.tasks[name].folder != folder:
                raise DataError(
                    f"{manifest}: task {name!r} is defined twice: in {self.tasks[name].folder} and {folder}"
                )
            specs[name] = TaskSpec(
                name=name,
                version=str(entry.get("version", "0")),
                description=str(entry.get("description", "")),
                factory=entry["factory"],
                folder=folder,
                package=package,
                origin=origin,
                config=dict(entry),
            )
        groups = data.get("groups", {})
        if not isinstance(groups, dict) or not all(
            isinstance(m, list) and all(isinstance(x, str) for x in m) for m in groups.values()
        ):
            raise DataError(f"{manifest}: [groups] must map group names to lists of task names")
        return specs, {group: list(members) for group, members in groups.items()}

    def aliases(self) -> dict[str, list[str]]:
        """Task name -> the other names its tasks.toml declares for it (`aliases = [...]`)."""
        return {name: list(spec.config.get("aliases") or []) for name, spec in self.tasks.items() if spec.config.get("aliases")}

    def canonical(self, name: str) -> str:
        """The task or group `name` names: its own name in any case ('_' for '-'), else a declared
        alias; unknown or ambiguous -> UsageError naming the candidates (rolebench_eval.naming)."""
        exact = {known: [known] for known in [*self.tasks, *self.groups]}
        try:
            return naming.resolve("task", name, [exact, self.aliases()])
        except UsageError as error:
            if self.broken:
                # The task may be defined in a plugin that could not be read: say which.
                where = "; ".join(self.broken.values())
                raise UsageError(f"{error} Task plugins that could not be read: {where}") from None
            raise

    def resolve(self, names: Iterable[str]) -> list[TaskSpec]:
        """Task specs for task and group names (or aliases), in order, without duplicates."""
        resolved: list[TaskSpec] = []
        for given in names:
            name = self.canonical(given)
            members = self.groups[name] if name in self.groups else [name]
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
        try:
            module = importlib.import_module(entry_point.value)
            folder = Path(module.__path__[0]) if hasattr(module, "__path__") else Path(str(module.__file__)).parent
        except Exception as exc:  # noqa: BLE001 - a third-party package's import may raise anything
            where = f"entry point {entry_point.name} ({entry_point.value})"
            registry.broken[where] = f"task plugin {where}: cannot import: {type(exc).__name__}: {exc}"
            continue
        registry.add_folder(folder, module.__name__, f"entry-point:{entry_point.name}")
    return registry


def check_task_options(specs: Iterable[TaskSpec], options: Iterable[str]) -> None:
    """Refuse a --task-option key that none of the chosen tasks reads (a typo would otherwise be
    recorded in the manifest and silently change nothing)."""
    specs = list(specs)
    if any(spec.config.get("options") is None for spec in specs):
        return  # a task that does not declare its options may read any key
    known = {key for spec in specs for key in spec.config["options"]}
    for key in options:
        if key not in known:
            tasks = ", ".join(spec.name for spec in specs)
            if known:
                raise UsageError(
                    f"--task-option {key}: not an option of {tasks}.{did_you_mean(key, known)} "
                    f"Known options: {', '.join(sorted(known))}."
                )
            raise UsageError(f"--task-option {key}: {tasks} take{'s' if len(specs) == 1 else ''} no task options")


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
    where = spec.folder / MANIFEST_NAME
    try:
        package = _package_for_folder(spec)
        module = importlib.import_module(f"{package}.{module_name}")
        factory = getattr(module, attribute)
    except RbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's import may raise anything; name the plugin
        raise DataError(
            f"task {spec.name} ({where}): cannot load factory {spec.factory!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if spec.origin == "builtin":
        return factory(spec, settings)  # a failure here is rbe's own bug: internal error, traceback logged
    try:
        return factory(spec, settings)
    except RbeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the plugin's code, not rbe's
        raise DataError(f"task {spec.name} ({where}): factory {spec.factory!r} raised {type(exc).__name__}: {exc}") from exc


def canonical_setting(specs: Iterable[TaskSpec], listed: str, value: str | None) -> str | None:
    """`value` (a --protocol or --roleplay-template name) in the spelling the chosen tasks declare
    under `listed` (`protocols`, `roleplay_templates` in tasks.toml), matched in any case and with
    '_' for '-'; returned as given when no task declares it, so that the task refuses it naming
    its own choices. The canonical spelling is what the manifest and config hash record."""
    if value is None:
        return None
    declared = list(dict.fromkeys(name for spec in specs for name in spec.config.get(listed) or []))
    return naming.match(value, declared) or value
