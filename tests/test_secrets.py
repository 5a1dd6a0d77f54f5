"""Secrets never reach manifests: keys in model args, URL credentials, pasted tokens."""

from __future__ import annotations

from rolebench_eval.models import judge_spec
from rolebench_eval.secrets import redact


def test_redact_hides_every_kind_of_secret() -> None:
    assert redact("pretrained=x,api_key=sk-abc123456789,base_url=http://h/v1") == "pretrained=x,api_key=***,base_url=http://h/v1"
    assert redact("http://user:hunter2@10.0.0.1:8000/v1") == "http://***@10.0.0.1:8000/v1"
    assert redact("--token hf_abcdefghij and Bearer xyz.abc") == "--token *** and ***"
    assert redact("gpt-4o-2024-08-06") == "gpt-4o-2024-08-06"


def test_judge_spec_description_has_no_credentials() -> None:
    spec = judge_spec("openai:m,base_url=http://me:pw@127.0.0.1:9/v1", None)
    assert "pw" not in str(spec.describe()) and spec.describe()["base_url"] == "http://***@127.0.0.1:9/v1"


# -- every placement: a run whose URL and options carry secrets ------------------------------------

import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/servers.py (importlib mode)
import servers  # noqa: E402
from rolebench_eval.cli import main  # noqa: E402

FULL = Path(__file__).resolve().parent / "fixtures" / "rolebench" / "full"
USER_SECRET, QUERY_SECRET, JUDGE_SECRET = "pw-Zq81UserInfo", "Qk77QueryKey", "Jd55JudgeToken"


def assert_no_secret(where: str, text: str) -> None:
    for secret in (USER_SECRET, QUERY_SECRET, JUDGE_SECRET):
        assert secret not in text, f"{secret} leaked into {where}"


def test_secrets_reach_no_file_and_no_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    def script(body: dict, ordinal: int) -> servers.Reply:  # answers, and rankings for the judge
        ranking = "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]"
        return servers.ok(ranking if "model_1" in json.dumps(body) else None)

    with servers.FakeOpenAIServer(models=("policy",), script=script) as server:
        url = server.base_url.replace("http://", f"http://user:{USER_SECRET}@")
        judge = f"openai:policy,base_url={server.base_url.replace('http://', f'http://{JUDGE_SECRET}@')},label=j"
        args = ["run", "--tasks", "rolebench-en", "--task-option", f"rolebench_dir={FULL}", "--limit", "1",
                "--model", "policy", "--base-url", url, "--judge", judge, "--results-dir", str(results),
                "--no-progress"]
        monkeypatch.setattr(sys, "argv", ["rbe", *args])  # the manifest records the command line
        code = main(args)
        out, err = capsys.readouterr()
        assert code == 0, err
        assert server.chat_requests, "the run must really have used the endpoint"
    run = Path(re.search(r"wrote (\S+) \(results.json", out).group(1))
    assert_no_secret("the terminal", out + err)
    files = [p for p in results.rglob("*") if p.is_file()]
    assert {"manifest.json", "results.json", "samples.jsonl", "report.md", "generation.jsonl"} <= {p.name for p in files}
    for path in files:
        assert_no_secret(str(path), path.read_text(encoding="utf-8", errors="replace"))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["base_url"].startswith("http://***@127.0.0.1:")  # redacted, not dropped
    assert manifest["command"][0] == "rbe" and any("***@127.0.0.1" in a for a in manifest["command"])

    baseline = tmp_path / "baseline.json"
    assert main(["baseline", "export", str(run), "--output", str(baseline), "--results-dir", str(results)]) == 0
    assert_no_secret("the baseline", baseline.read_text() + "".join(capsys.readouterr()))
    main(["compare", str(baseline), str(run), "--results-dir", str(results), "--allow-mismatch"])
    assert_no_secret("compare output", "".join(capsys.readouterr()))

    # An endpoint that does not answer, its key in the query string: the error names the URL, redacted.
    down = f"http://user:{USER_SECRET}@127.0.0.1:{servers.closed_port()}/v1?api-key={QUERY_SECRET}&sig={QUERY_SECRET}"
    assert main(["run", "--tasks", "rolebench-en", "--task-option", f"rolebench_dir={FULL}", "--model", "policy",
                 "--base-url", down, "--results-dir", str(tmp_path / "other"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not answer" in err and "api-key=***&sig=***" in err
    assert_no_secret("an error message", err)


def test_model_args_and_labels_carry_no_secret() -> None:
    from rolebench_eval.backends.base import BackendOptions
    from rolebench_eval.models import model_under_test, spec_identity

    spec = model_under_test("local-chat-completions", "lm-eval", None,
                            f"model=m,base_url=http://h/v1,api_key={QUERY_SECRET},token={JUDGE_SECRET}")
    text = json.dumps(spec.describe()) + spec_identity(spec, BackendOptions()) + spec.label
    assert_no_secret("an lm-eval spec", text)
    assert "api_key=***" in text


def test_redaction_keeps_settings_that_only_look_like_secrets() -> None:
    assert redact("max_tokens=512,tokenizer=gpt2,monkey=1") == "max_tokens=512,tokenizer=gpt2,monkey=1"
    assert redact("--task-option 'x': expected KEY=VALUE") == "--task-option 'x': expected KEY=VALUE"
    assert redact("https://h/v1?key=abc&api-key=def&x-api-key=ghi&sig=jkl&model=m") == (
        "https://h/v1?key=***&api-key=***&x-api-key=***&sig=***&model=m")


def test_url_credentials_go_as_basic_auth_and_never_as_a_bearer_key(monkeypatch: pytest.MonkeyPatch) -> None:
    import base64
    import warnings

    from rolebench_eval.backends.base import BackendOptions
    from rolebench_eval.backends.openai_backend import OpenAIBackend
    from rolebench_eval.requests import ChatRequest, GenerationParams, Message
    from servers import FakeOpenAIServer, ok, sequence

    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-this-server")
    with FakeOpenAIServer(sequence(ok("Good day."))) as server:
        url = server.base_url.replace("http://", "http://me:s3cret@")
        backend = OpenAIBackend("fake-model", BackendOptions(request_timeout_s=5, max_attempts=1), base_url=url)
        seen: list[str] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            backend.generate([ChatRequest((Message("user", "hi"),), GenerationParams(max_tokens=8))],
                             lambda index, completion: seen.append(completion.text or ""))
    assert seen == ["Good day."]
    # aiohttp 3.14 deprecates BasicAuth and the session's `auth`: the header is built without them.
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning) and "auth" in str(w.message).lower()]
    expected = "Basic " + base64.b64encode(b"me:s3cret").decode()
    assert server.chat_requests[0].headers["authorization"] == expected
