"""A re-served checkpoint never inherits the old checkpoint's answers.

The identity of a model behind an OpenAI-compatible endpoint carries what the server says about
the checkpoint (vLLM's /v1/models `root` and `max_model_len`, llama.cpp's `meta` and /props, a
stable `created`), the user's --model-revision, and, only when the server says nothing, the URL.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/servers.py (importlib mode)
import servers  # noqa: E402
from rolebench_eval.backends.fingerprint import served_model_facts, server_fingerprint, text_sha256
from rolebench_eval.cli import main
from rolebench_eval.models import ModelSpec, judge_spec, model_under_test, openai_identity, spec_identity
from rolebench_eval.backends.base import BackendOptions

FULL = Path(__file__).resolve().parent / "fixtures" / "rolebench" / "full"
NOW = 1_760_000_000.0

# Recorded /v1/models entries and /props bodies (trimmed to the fields servers send).
VLLM_ENTRY = {"id": "policy", "object": "model", "created": int(NOW), "owned_by": "vllm",
              "root": "/ckpt/step-1000", "parent": None, "max_model_len": 8192,
              "permission": [{"id": "modelperm-1", "object": "model_permission", "created": int(NOW)}]}
LLAMACPP_ENTRY = {"id": "policy", "object": "model", "created": int(NOW), "owned_by": "llamacpp",
                  "meta": {"vocab_type": 2, "n_vocab": 49152, "n_ctx_train": 8192, "n_embd": 576,
                           "n_params": 134515008, "size": 98000000}}
LLAMACPP_PROPS = {"default_generation_settings": {"n_ctx": 4096, "temperature": 0.8},
                  "total_slots": 1, "model_path": "/models/smollm2.Q4_1.gguf",
                  "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}",
                  "build_info": "b5000-abcdef"}
TRANSFORMERS_SERVE_ENTRY = {"id": "local/policy", "object": "model", "created": 1_750_000_123.5, "owned_by": "local"}
OPENAI_ENTRY = {"id": "gpt-4o-2024-08-06", "object": "model", "created": 1722814719, "owned_by": "system"}
LLAMA_CPP_PYTHON_ENTRY = {"id": "policy", "object": "model", "owned_by": "me", "permissions": []}


@pytest.mark.parametrize("entry, props, expected", [
    (VLLM_ENTRY, None, {"root": "/ckpt/step-1000", "max_model_len": 8192, "owned_by": "vllm"}),
    (LLAMACPP_ENTRY, LLAMACPP_PROPS, {
        "meta": {"n_ctx_train": 8192, "n_embd": 576, "n_params": 134515008, "n_vocab": 49152,
                 "size": 98000000, "vocab_type": 2},
        "model_path": "/models/smollm2.Q4_1.gguf", "n_ctx": 4096,
        "chat_template_sha256": text_sha256(LLAMACPP_PROPS["chat_template"])[:16], "owned_by": "llamacpp"}),
    (TRANSFORMERS_SERVE_ENTRY, None, {"created": 1_750_000_123.5, "owned_by": "local"}),
    (OPENAI_ENTRY, None, {"created": 1722814719, "owned_by": "system"}),
    (LLAMA_CPP_PYTHON_ENTRY, None, {}),  # a constant owned_by identifies nothing
    ({"id": "fake-model", "object": "model", "created": 0, "owned_by": "test"}, None, {}),
    # An unknown server whose `created` is the request time: not a property of the model.
    ({"id": "m", "object": "model", "created": int(NOW) - 1, "owned_by": "acme"}, None, {}),
    (None, None, {}),
])
def test_served_model_facts_from_recorded_payloads(entry: Any, props: Any, expected: dict) -> None:
    facts = served_model_facts(entry, props, NOW)
    assert facts == expected
    assert (server_fingerprint(facts) is None) == (expected == {})


def test_vllm_created_is_request_time_and_never_enters_the_fingerprint() -> None:
    later = {**VLLM_ENTRY, "created": int(NOW) + 3600}
    assert server_fingerprint(served_model_facts(VLLM_ENTRY, None, NOW)) == server_fingerprint(
        served_model_facts(later, None, NOW + 3600))
    other = {**VLLM_ENTRY, "root": "/ckpt/step-2000"}
    assert server_fingerprint(served_model_facts(other, None, NOW)) != server_fingerprint(
        served_model_facts(VLLM_ENTRY, None, NOW))


def test_identity_is_name_and_fingerprint_when_the_server_tells_and_carries_the_revision() -> None:
    facts = served_model_facts(VLLM_ENTRY, None, NOW)
    here = openai_identity("policy", "http://127.0.0.1:8000/v1", facts, None)
    replica = openai_identity("policy", "http://10.0.0.7:9000/v1", facts, None)
    assert here == replica == f"openai:policy:server={server_fingerprint(facts)}"
    assert openai_identity("policy", "http://h/v1", facts, "step-1000") == here + ":revision=step-1000"
    # Nothing said: the URL and the name, as before (stored answers of such servers stay valid).
    assert openai_identity("policy", "http://127.0.0.1:8000/v1", {}, None) == "openai:http://127.0.0.1:8000/v1:policy"
    assert openai_identity("p", "http://u:pw@h/v1?api-key=K", None, None) == "openai:http://***@h/v1?api-key=***:p"


def test_model_revision_is_recorded_and_changes_every_backends_identity(tmp_path: Path) -> None:
    options = BackendOptions()
    api = model_under_test("policy", "openai", "http://127.0.0.1:9/v1", None, revision="step-2000")
    assert api.describe()["revision"] == "step-2000"
    assert spec_identity(api, options).endswith(":revision=step-2000")
    weights = tmp_path / "model.gguf"
    weights.write_bytes(b"weights")
    local = model_under_test(str(weights), "hf", None, None, revision="v2")
    assert spec_identity(local, options) != spec_identity(model_under_test(str(weights), "hf", None, None), options)
    judge = judge_spec("openai:j,base_url=http://127.0.0.1:9/v1,revision=2024-06", None)
    assert judge.revision == "2024-06" and spec_identity(judge, options).endswith(":revision=2024-06")


# -- runs against loopback endpoints ---------------------------------------------------------------


def vllm_models(root: str) -> servers.Reply:
    """/v1/models as vLLM answers it (`created` is the request time)."""
    body = {"object": "list", "data": [{**VLLM_ENTRY, "created": int(time.time()), "root": root}]}
    return servers.raw(json.dumps(body).encode())


def vllm_like(root: str, answer: str) -> servers.FakeOpenAIServer:
    return servers.FakeOpenAIServer(models_reply=vllm_models(root), script=servers.always(servers.ok(answer)))


def run_args(base_url: str, results: Path, *extra: str) -> list[str]:
    return ["run", "--tasks", "rolebench-en", "--task-option", f"rolebench_dir={FULL}", "--limit", "2",
            "--model", "policy", "--base-url", base_url, "--results-dir", str(results),
            "--no-progress", "--no-leaderboard", *extra]


def answers(run_dir: Path) -> list[str]:
    return [json.loads(line)["answer"] for line in (run_dir / "samples.jsonl").read_text().splitlines()]


def wrote(out: str) -> Path:
    match = re.search(r"wrote (\S+) \(results.json", out)
    assert match, out
    return Path(match.group(1))


def test_a_reserved_checkpoint_gets_none_of_the_old_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    with vllm_like("/ckpt/a", "answer of A") as server:
        assert main(run_args(server.base_url, results)) == 0
        run_a = wrote(capsys.readouterr().out)
        assert len(server.chat_requests) == 2
        # Checkpoint B served under the same name at the same URL.
        server.models_reply = vllm_models("/ckpt/b")
        server.script = servers.always(servers.ok("answer of B"))
        assert main(run_args(server.base_url, results)) == 0
        out = capsys.readouterr().out
        assert len(server.chat_requests) == 4, "B's answers must come from B"
        assert "model calls made: 2; reused from the run directory: 0" in out
        run_b = wrote(out)
        assert main(run_args(server.base_url, results)) == 0  # a rerun of B reuses B, with no model call
        assert "model calls made: 0;" in capsys.readouterr().out and len(server.chat_requests) == 4
    assert run_a != run_b
    assert answers(run_a) == ["answer of A"] * 2 and answers(run_b) == ["answer of B"] * 2
    manifest_b = json.loads((run_b / "manifest.json").read_text())
    assert manifest_b["model"]["served_model"] == {"root": "/ckpt/b", "max_model_len": 8192, "owned_by": "vllm"}
    assert manifest_b["model"]["identity"] == f"openai:policy:server={manifest_b['model']['server_fingerprint']}"
    assert not any("says nothing" in d for d in manifest_b["deviations"])
    # The server is gone: the latest finished run is still printed from its files, nothing added.
    before = sorted(p.name for p in (results / "runs").iterdir())
    assert main(run_args(server.base_url, results)) == 0
    out, err = capsys.readouterr()
    assert wrote(out) == run_b and "does not answer" in err and "Traceback" not in err
    assert sorted(p.name for p in (results / "runs").iterdir()) == before


def test_the_same_checkpoint_on_a_replica_reuses_its_answers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    with vllm_like("/ckpt/a", "answer of A") as a:
        assert main(run_args(a.base_url, results)) == 0
    with vllm_like("/ckpt/a", "should not be asked") as replica:
        assert main(run_args(replica.base_url, results)) == 0
        assert "model calls made: 0;" in capsys.readouterr().out
        assert replica.chat_requests == []


def test_a_server_that_tells_nothing_is_said_plainly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    with servers.FakeOpenAIServer(models=("policy",)) as server:
        assert main(run_args(server.base_url, results)) == 0
        out, err = capsys.readouterr()
    manifest = json.loads((wrote(out) / "manifest.json").read_text())
    [note] = [d for d in manifest["deviations"] if "says nothing that identifies" in d]
    assert "reused by URL and model name only" in note and "--model-revision" in note and "--fresh" in note
    assert f"note: {note}" in err
    assert manifest["model"]["served_model"] == {} and manifest["model"]["server_fingerprint"] is None
    # The user names the checkpoint: the warning goes, the revision is recorded and keyed.
    with servers.FakeOpenAIServer(models=("policy",)) as server:
        assert main(run_args(server.base_url, results, "--model-revision", "step-2000")) == 0
        out, _ = capsys.readouterr()
        assert len(server.chat_requests) == 2  # not the unrevised run's answers
    manifest = json.loads((wrote(out) / "manifest.json").read_text())
    assert manifest["model"]["revision"] == "step-2000"
    assert not any("says nothing" in d for d in manifest["deviations"])


def test_fresh_makes_every_call_anew_and_its_answers_win_later(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "results"
    with servers.FakeOpenAIServer(models=("policy",), script=servers.always(servers.ok("old answer"))) as server:
        assert main(run_args(server.base_url, results)) == 0
        run = wrote(capsys.readouterr().out)
        # Another checkpoint behind the same URL and name, and a server that says nothing about
        # it: only the user knows, and --fresh is how they say so.
        server.script = servers.always(servers.ok("new answer"))
        assert main(run_args(server.base_url, results, "--fresh")) == 0
        out = capsys.readouterr().out
        assert len(server.chat_requests) == 4 and "model calls made: 2; reused from the run directory: 0" in out
        assert wrote(out) == run and answers(run) == ["new answer"] * 2
        assert any(d.startswith("--fresh:") for d in json.loads((run / "results.json").read_text())["deviations"])
        # A plain rerun, re-deriving from the calls file (old and new records of each key): the
        # fresh answers win, with no call.
        (run / "calls" / "derived-stamp.json").unlink()
        assert main(run_args(server.base_url, results)) == 0
        out = capsys.readouterr().out
        assert "model calls made: 0;" in out and len(server.chat_requests) == 4
        assert answers(wrote(out)) == ["new answer"] * 2
