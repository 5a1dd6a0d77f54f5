"""Package layout: the engine plus the top-level `tasks/` and `judges/` folders as its subpackages.

The plugins live at the repository's top level (one obvious place to add a benchmark) and install
as `rolebench_eval.tasks` / `rolebench_eval.judges`, so `pip install .` gives a working `rbe`
anywhere. Subpackages are discovered, so a new task folder needs no change here.
"""

from setuptools import find_packages, setup

PLUGIN_FOLDERS = {"rolebench_eval.tasks": "tasks", "rolebench_eval.judges": "judges"}

packages = find_packages(include=["rolebench_eval", "rolebench_eval.*"])
for package, folder in PLUGIN_FOLDERS.items():
    packages.append(package)
    packages += [f"{package}.{sub}" for sub in find_packages(folder)]

setup(
    packages=packages,
    package_dir={"rolebench_eval": "rolebench_eval", **PLUGIN_FOLDERS},
)
