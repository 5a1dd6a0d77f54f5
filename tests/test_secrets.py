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
