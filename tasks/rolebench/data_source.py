"""Where the RoleBench data comes from, in order: the `root` argument, the `RBE_ROLEBENCH_DIR`
environment variable, the copy shipped in `data/` next to this module. `fetch_from_hub` downloads
the Hugging Face dataset on explicit request only; nothing here touches the network implicitly.
Reading a directory in the dataset's layout is dataset.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from rolebench_eval.errors import DataError

SHIPPED_ROOT = Path(__file__).resolve().parent / "data"
ENV_VAR = "RBE_ROLEBENCH_DIR"
HUB_REPO_ID = "ZenMoore/RoleBench"
# Only what the evaluation reads: the full repository is about 471 MB, mostly training data and
# per-role dialogue profiles. fnmatch's `*` crosses "/", so these match at any depth.
HUB_ALLOW_PATTERNS: tuple[str, ...] = (
    "README.md",
    "rolebench-*/test.jsonl",
    "rolebench-*/rolegpt_baseline.jsonl",
    "instructions-*/instructions-general.jsonl",
    "profiles-*/desc.json",
)


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The dataset directory: argument, else $RBE_ROLEBENCH_DIR, else the shipped copy."""
    if root is not None:
        origin, path = "the given directory", Path(root)
    elif os.environ.get(ENV_VAR):
        origin, path = f"${ENV_VAR}", Path(os.environ[ENV_VAR])
    else:
        origin, path = "the shipped copy", SHIPPED_ROOT
    if not path.is_dir():
        raise DataError(
            f"RoleBench directory {str(path)!r} ({origin}) does not exist or is not a directory. "
            f"Pass a directory in the dataset's layout or set {ENV_VAR}."
        )
    return path


def fetch_from_hub(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    repo_id: str = HUB_REPO_ID,
) -> Path:
    """Download the evaluation files of `ZenMoore/RoleBench` and return the snapshot directory.

    Explicit only (never called by `load_split`). Offline, or with HF_HUB_OFFLINE=1 and no cached
    copy, this raises DataError saying how to use a local directory instead.
    """
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise DataError(
            "fetching RoleBench from the Hugging Face hub needs the huggingface_hub package; "
            f"install it, or pass a local directory / set {ENV_VAR}"
        ) from None
    try:
        path = snapshot_download(
            repo_id=repo_id,
            repo_type="dataset",
            revision=revision,
            cache_dir=None if cache_dir is None else str(cache_dir),
            allow_patterns=list(HUB_ALLOW_PATTERNS),
        )
    except Exception as error:  # network, auth, offline mode, missing cache: all the same to us
        raise DataError(
            f"could not fetch dataset {repo_id!r} from the Hugging Face hub "
            f"({type(error).__name__}: {error}). If this machine is offline, pass a local "
            f"directory in the RoleBench layout or set {ENV_VAR}."
        ) from None
    return Path(path)
