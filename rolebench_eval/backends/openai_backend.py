"""Any OpenAI-compatible chat endpoint: the OpenAI API, vLLM, llama.cpp, transformers serve...

This module makes and classifies one HTTP attempt (`attempt`); how many requests are in flight
and how failed attempts are retried (429, 5xx, timeouts, connection errors: exponential backoff
with full jitter, honouring Retry-After, bounded both in attempts and in total time per request)
is the lane's (scheduling/api_lane.py), over this endpoint and its replicas. A request that still
fails is recorded as a failed call with its reason. Problems that would fail every request (endpoint down, key rejected, unknown
model) stop the run before any work is done. The API key is read from the environment and never
stored anywhere.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from typing import Any

from rolebench_eval.backends import http_chat
from rolebench_eval.backends.base import OPENAI_API_URL, BackendOptions, ResultCallback
from rolebench_eval.backends.fingerprint import served_model_facts
from rolebench_eval.backends.guided import guided_outcome, structured_outputs_body
from rolebench_eval.errors import BackendError, did_you_mean
from rolebench_eval.requests import ChatRequest
from rolebench_eval.scheduling.api_lane import ApiLane, ApiLaneSettings, AttemptOutcome
from rolebench_eval.scheduling.endpoints import EndpointPool
from rolebench_eval.secrets import redact

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# Local servers (vLLM, llama.cpp) accept any key; the client library insists on one.
PLACEHOLDER_KEY = "EMPTY"


class OpenAIBackend:
    def __init__(
        self,
        model: str,
        options: BackendOptions,
        *,
        base_url: str | None = None,
        api_key_env: str = DEFAULT_KEY_ENV,
        check_endpoint: bool = True,
        revision: str | None = None,
        replicas: Sequence[str] = (),
    ):
        import openai

        self._model = model
        self._options = options
        self._base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_API_URL).rstrip("/")
        self._api_key_env = api_key_env
        self._revision = revision
        # The /v1/models entry of our model (None: not asked, or the server lists no such entry).
        self._served_entry: dict[str, Any] | None = None
        self._checked = False
        self._facts: dict[str, Any] | None = None
        key = os.environ.get(api_key_env)
        if not key:
            if self._base_url == OPENAI_API_URL:
                raise BackendError(
                    f"missing API key for {model}: set the environment variable {api_key_env} "
                    "(or point --base-url / --judge-base-url at a local OpenAI-compatible server)"
                )
            key = PLACEHOLDER_KEY
        self._client_args = {"base_url": self._base_url, "api_key": key}
        self._chat_url = f"{self._base_url}/chat/completions"
        self._shown = redact(self._base_url)  # for messages; redacted once, not per call
        self._openai = openai
        if check_endpoint:
            self._check_endpoint()
        # Further endpoints serving the same model (--base-url A|B): each is checked like the
        # first; models.preflight has checked that they all serve the same checkpoint.
        self._replica_backends = [
            OpenAIBackend(model, options, base_url=url, api_key_env=api_key_env,
                          check_endpoint=check_endpoint, revision=revision)
            for url in replicas
        ]

    def _check_endpoint(self) -> None:
        openai = self._openai
        shown = redact(self._base_url)  # messages are shown and logged: no URL credentials
        client = openai.OpenAI(**self._client_args, timeout=15.0, max_retries=1)
        self._checked = True
        try:
            entries = [m.model_dump() for m in client.models.list()]
        except openai.AuthenticationError as exc:
            raise BackendError(
                f"{shown} rejected the API key from ${self._api_key_env}: {redact(str(exc.message))}"
            ) from exc
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise BackendError(
                f"endpoint {shown} does not answer ({exc.__class__.__name__}): is the "
                "server running and the URL right (it usually ends in /v1)?"
            ) from exc
        except openai.APIStatusError:
            return  # some servers do not implement /models; the first request will tell
        finally:
            client.close()
        served = [str(entry.get("id")) for entry in entries]
        if served and self._model not in served:
            raise BackendError(
                f"model {self._model!r} is not served by {shown}."
                f"{did_you_mean(self._model, served)} Served: {', '.join(served[:20])}"
            )
        self._served_entry = next((e for e in entries if e.get("id") == self._model), None)

    def server_facts(self) -> dict[str, Any]:
        """What the server says that identifies the checkpoint it serves under our model name
        (see fingerprint.served_model_facts); {} when it says nothing. Metadata requests only."""
        if self._facts is not None:
            return self._facts
        if not self._checked:
            self._check_endpoint()
        entry = self._served_entry
        facts = served_model_facts(entry, None, time.time())
        # llama.cpp's llama-server tells the model file and chat template at /props, beside /v1.
        # The OpenAI API has no such route; other servers answer 404, which is ignored.
        owned_by = str((entry or {}).get("owned_by", "")).lower()
        if self._base_url != OPENAI_API_URL and (owned_by == "llamacpp" or not facts):
            props = self._get_props()
            if props:
                facts = served_model_facts(entry, props, time.time())
        self._facts = facts
        return facts

    def _get_props(self) -> dict[str, Any] | None:
        import json
        import urllib.error
        import urllib.request

        root = self._base_url[: -len("/v1")] if self._base_url.endswith("/v1") else self._base_url
        request = urllib.request.Request(
            f"{root}/props", headers={"Authorization": f"Bearer {self._client_args['api_key']}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=5.0) as response:
                data = json.loads(response.read()) if response.status == 200 else None
        except (urllib.error.URLError, OSError, ValueError):
            return None  # no /props (not llama.cpp), or not JSON: the server tells nothing there
        return data if isinstance(data, dict) else None

    @property
    def identity(self) -> str:
        from rolebench_eval.models import openai_identity

        facts = self.server_facts() if self._checked else None
        return openai_identity(self._model, self._base_url, facts, self._revision)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "openai",
            "model": self._model,
            "base_url": redact(self._base_url),
            "revision": self._revision,
            "api_key_env": self._api_key_env,  # the variable's name only, never its value
            "replicas": [redact(r._base_url) for r in self._replica_backends],
            "concurrency": ApiLaneSettings.from_options(self._options).describe(),
            "request_timeout_s": self._options.request_timeout_s,
            "max_attempts": self._options.max_attempts,
            "max_retry_time_s": self._options.max_retry_time_s,
            "openai_client": self._openai.__version__,
        }

    @property
    def name(self) -> str:
        """This endpoint in messages and lane snapshots (credentials redacted)."""
        return redact(self._base_url)

    def replicas(self) -> list[OpenAIBackend]:
        """This endpoint and the replicas serving the same model (`replicas=` URLs)."""
        return [self, *self._replica_backends]

    def lane(self, label: str | None = None, pool: EndpointPool | None = None) -> ApiLane:
        """A lane over every replica, with this backend's retry and concurrency settings. The
        scheduler owns one per model; `generate` runs a private one. Lanes built with the same
        `pool` share the concurrency controller of an endpoint (URL) they both send to."""
        # The jitter is looked up here at call time: tests make backoff sleeps short by
        # replacing this module's `random`, never by changing the retry policy.
        return ApiLane(
            label or self._model,
            self.replicas(),
            ApiLaneSettings.from_options(self._options),
            jitter=lambda low, high: random.uniform(low, high),
            pool=pool,
        )

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        asyncio.run(self._generate_all(requests, on_result))

    async def _generate_all(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        lane = self.lane()
        fatal: list[BaseException] = []

        async def one(index: int, request: ChatRequest) -> None:
            try:
                completion = await lane.complete(request)
            except BackendError as exc:
                fatal.append(exc)
                return
            on_result(index, completion)

        try:
            await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        finally:
            await lane.aclose()
        if fatal:
            raise fatal[0]

    def open_client(self) -> Any:
        """The HTTP session of this replica; created inside the running loop (it binds to it),
        closed by the lane. Chat requests go over aiohttp (backends/http_chat.py: the openai
        client cost ~3 ms of CPU per call), the endpoint check over the openai client."""
        return http_chat.open_session(self._chat_url, self._client_args["api_key"], self._options.request_timeout_s)

    async def close_client(self, client: Any) -> None:
        await client.close()

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        params = request.params
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
        }
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        if request.guided_regex is not None:  # only with --judge-output guided (backends/guided.py)
            body.update(structured_outputs_body(request.guided_regex))
        return body

    async def attempt(self, client: Any, request: ChatRequest) -> AttemptOutcome:
        """One HTTP attempt, classified; the retry policy is the lane's (scheduling/api_lane.py)."""
        outcome = await http_chat.post_chat(
            client, self._body(request), model=self._model, shown=self._shown,
            timeout_s=self._options.request_timeout_s,
        )
        return guided_outcome(request, outcome, self._shown)  # redacted once (per call it showed in profiles)

    def close(self) -> None:
        pass

