"""Two checkpoints served in turn as `policy` at the same URL by vLLM's real OpenAI server.

The scripted servers of test_model_identity.py answer /v1/models as vLLM does; this test checks
that the real server says what they say, and that a run against checkpoint B after a run against
checkpoint A, under one name and one URL, makes B's calls instead of reusing A's answers (the
old identity, base URL plus model name, reused all of them), while the same checkpoint served
again keeps its answers. Runs in the vLLM environment built by `.ci/vllm-env.sh`:
    .venv-vllm/bin/python -m pytest -m vllm tests/test_vllm_server_identity.py
Three server start-ups (eager mode), about 30-50 s each on 2 cores.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("vllm")

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/servers.py (importlib mode)
import servers  # noqa: E402
from rolebench_eval.cli import main  # noqa: E402
from rolebench_eval.embedded import embedded_gguf_path, ensure_safetensors_copy  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.server, pytest.mark.slow]

FULL = Path(__file__).resolve().parent / "fixtures" / "rolebench" / "full"
MAX_MODEL_LEN = 1024
# uvicorn's access log line for each chat request vLLM answered.
CHAT_POST = re.compile(r'"POST /v1/chat/completions HTTP/1\.1" 200')


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A: the embedded model's safetensors copy. B: the same model with every MLP down
    projection perturbed by seeded noise, so its greedy answers differ (a stand-in for a
    further-trained checkpoint); its other files are links to A's."""
    import torch
    from safetensors.torch import load_file, save_file

    a = ensure_safetensors_copy(embedded_gguf_path())
    b = tmp_path_factory.mktemp("checkpoint-b")
    for file in a.iterdir():
        if file.suffix != ".safetensors":
            (b / file.name).symlink_to(file)
    generator = torch.Generator().manual_seed(8)
    tensors = load_file(str(a / "model.safetensors"))
    perturbed = 0
    for name, tensor in tensors.items():
        if name.endswith("mlp.down_proj.weight"):
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float32)
            tensors[name] = (tensor.float() + 0.5 * tensor.float().std() * noise).to(tensor.dtype)
            perturbed += 1
    assert perturbed > 0, f"no MLP weights found in {a}: {sorted(tensors)[:5]}"
    save_file(tensors, str(b / "model.safetensors"), metadata={"format": "pt"})
    return a, b


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Path, str], servers.ServerProcess]]:
    """Start a checkpoint as `policy` on this test's one port; every server is stopped at the
    end, whatever the test did. Serving a second one stops the first (one port, one server)."""
    port = servers.free_port()
    started: list[servers.ServerProcess] = []

    def start(model_dir: Path, log_name: str) -> servers.ServerProcess:
        for server in started:
            server.stop()
        server = servers.start_vllm_serve(model_dir, tmp_path / log_name, port, max_model_len=MAX_MODEL_LEN)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def run_args(base_url: str, results: Path) -> list[str]:
    return ["run", "--tasks", "rolebench-en", "--task-option", f"rolebench_dir={FULL}", "--limit", "2",
            "--model", "policy", "--base-url", base_url, "--max-tokens", "16", "--request-timeout", "120",
            "--results-dir", str(results), "--no-progress", "--no-leaderboard"]


def wrote(out: str) -> Path:
    match = re.search(r"wrote (\S+) \(results.json", out)
    assert match, out
    return Path(match.group(1))


def answers(run_dir: Path) -> list[str]:
    return [json.loads(line)["answer"] for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def chat_posts(server: servers.ServerProcess) -> int:
    return len(CHAT_POST.findall(server.log_tail(chars=10**8)))


def test_a_reserved_checkpoint_on_a_real_vllm_server_gets_none_of_the_old_answers(
    checkpoints: tuple[Path, Path],
    serve: Callable[[Path, str], servers.ServerProcess],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a, b = checkpoints
    results = tmp_path / "results"

    server_a = serve(a, "a.log")
    url = server_a.base_url
    assert main(run_args(url, results)) == 0
    out = capsys.readouterr().out
    assert "model calls made: 2; reused from the run directory: 0" in out, out
    run_a = wrote(out)
    assert chat_posts(server_a) == 2, server_a.log_tail()

    # Checkpoint B served under the same name at the same URL: the old failure mode was a run
    # with 0 calls that printed A's answers as B's.
    server_b = serve(b, "b.log")
    assert server_b.base_url == url
    assert main(run_args(url, results)) == 0
    out = capsys.readouterr().out
    assert "model calls made: 2; reused from the run directory: 0" in out, out
    run_b = wrote(out)
    assert chat_posts(server_b) == 2, server_b.log_tail()
    assert run_b != run_a
    assert all(answers(run_a)) and all(answers(run_b))
    assert answers(run_b) != answers(run_a), "B's answers must be B's own, not A's"

    # The manifests carry what the real server said: the folder it serves and its context size.
    model_a = json.loads((run_a / "manifest.json").read_text())["model"]
    manifest_b = json.loads((run_b / "manifest.json").read_text())
    model_b = manifest_b["model"]
    assert model_a["served_model"] == {"root": str(a), "max_model_len": MAX_MODEL_LEN, "owned_by": "vllm"}
    assert model_b["served_model"] == {"root": str(b), "max_model_len": MAX_MODEL_LEN, "owned_by": "vllm"}
    assert model_a["base_url"] == model_b["base_url"] == url
    for model in (model_a, model_b):
        assert model["identity"] == f"openai:policy:server={model['server_fingerprint']}"
    assert model_a["identity"] != model_b["identity"]
    assert not any("says nothing" in d for d in manifest_b["deviations"])

    # A rerun against B reuses B's answers: vLLM's request-time fields never enter the identity.
    assert main(run_args(url, results)) == 0
    out = capsys.readouterr().out
    assert "model calls made: 0;" in out, out
    assert wrote(out) == run_b and chat_posts(server_b) == 2

    # A served again (a fresh server process) keeps A's answers.
    server_a_again = serve(a, "a-again.log")
    assert main(run_args(url, results)) == 0
    out = capsys.readouterr().out
    assert "model calls made: 0;" in out, out
    assert wrote(out) == run_a and chat_posts(server_a_again) == 0
    assert sorted(p.name for p in (results / "runs").iterdir()) == sorted([run_a.name, run_b.name])
