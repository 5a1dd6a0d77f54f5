"""Any OpenAI-compatible chat endpoint: the OpenAI API, vLLM, llama.cpp, transformers serve...

Requests run concurrently (bounded by `concurrency`) with retries on 429, 5xx, timeouts and
connection errors: exponential backoff with full jitter, honouring Retry-After, bounded both in
attempts and in total time per request. A request that still fails is recorded as a failed call
with its reason. Problems that would fail every request (endpoint down, key rejected, unknown
model) stop the run before any work is done. The API key is read from the environment and never
stored anywhere.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rolebench_eval.backends.base import BackendOptions, ResultCallback
from rolebench_eval.backends.fingerprint import served_model_facts
from rolebench_eval.errors import BackendError, did_you_mean
from rolebench_eval.requests import ChatRequest, Completion, Usage
from rolebench_eval.secrets import redact

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
OPENAI_API_URL = "https://api.openai.com/v1"
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
        self._openai = openai
        if check_endpoint:
            self._check_endpoint()

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
            "concurrency": self._options.concurrency,
            "request_timeout_s": self._options.request_timeout_s,
            "max_attempts": self._options.max_attempts,
            "max_retry_time_s": self._options.max_retry_time_s,
            "openai_client": self._openai.__version__,
        }

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        asyncio.run(self._generate_all(requests, on_result))

    async def _generate_all(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        client = self._openai.AsyncOpenAI(
            **self._client_args, timeout=self._options.request_timeout_s, max_retries=0
        )
        semaphore = asyncio.Semaphore(max(1, self._options.concurrency))
        fatal: list[BackendError] = []

        async def one(index: int, request: ChatRequest) -> None:
            async with semaphore:
                if fatal:
                    return
                try:
                    completion = await self._call_with_retries(client, request)
                except BackendError as exc:
                    fatal.append(exc)
                    return
                on_result(index, completion)

        try:
            await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
        finally:
            await client.close()
        if fatal:
            raise fatal[0]

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
        return body

    async def _call_with_retries(self, client: Any, request: ChatRequest) -> Completion:
        openai = self._openai
        body = self._body(request)
        deadline = time.monotonic() + self._options.max_retry_time_s
        last_error = "no attempt made"
        # Why each attempt before the current one failed: a recovered fault stays on the record.
        earlier: list[str] = []
        for attempt in range(1, self._options.max_attempts + 1):
            retry_after: float | None = None
            if attempt > 1:
                earlier.append(last_error)
            try:
                response = await client.chat.completions.create(**body)
                choice = response.choices[0]
                usage = response.usage
                return Completion(
                    text=choice.message.content or "",
                    finish_reason=choice.finish_reason,
                    usage=Usage(
                        prompt_tokens=getattr(usage, "prompt_tokens", None),
                        completion_tokens=getattr(usage, "completion_tokens", None),
                    ),
                    attempts=attempt,
                    attempt_errors=tuple(earlier),
                )
            except openai.AuthenticationError as exc:
                raise BackendError(f"{self._base_url}: API key rejected: {exc.message}") from exc
            except openai.NotFoundError as exc:
                raise BackendError(
                    f"{self._base_url}: model {self._model!r} not found: {exc.message}"
                ) from exc
            except openai.RateLimitError as exc:
                last_error = f"HTTP 429 rate limited: {exc.message}"
                retry_after = _retry_after(exc)
            except openai.InternalServerError as exc:
                last_error = f"HTTP {exc.status_code} server error: {exc.message}"
            except openai.APITimeoutError:
                last_error = f"timed out after {self._options.request_timeout_s:g} s"
            except openai.APIConnectionError as exc:
                last_error = f"connection error: {exc.message}"
            except openai.APIStatusError as exc:
                # 400 and friends: this request is wrong (too long, bad parameter); retrying
                # would give the same answer.
                return replace(
                    Completion.failure(f"HTTP {exc.status_code}: {_error_text(exc)}"),
                    attempts=attempt,
                    attempt_errors=tuple(earlier),
                )
            except (IndexError, AttributeError, TypeError, ValueError) as exc:
                last_error = f"malformed response: {exc!r}"
            delay = retry_after if retry_after is not None else random.uniform(0, min(60.0, 2.0**attempt))
            if attempt == self._options.max_attempts or time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay)
        return replace(
            Completion.failure(f"{last_error} (gave up after {attempt} attempt(s))"),
            attempts=attempt,
            attempt_errors=tuple(earlier),
        )

    def close(self) -> None:
        pass


def _error_text(exc: Any) -> str:
    """The server's own words: the client only keeps OpenAI-shaped bodies ({"error": {...}}),
    while FastAPI servers answer {"detail": ...} and proxies plain text."""
    message = str(getattr(exc, "message", "") or "")
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("message") or body.get("error")
        if detail and str(detail) not in message:
            return f"{message}: {detail}" if message else str(detail)
    elif body is None:
        try:
            text = exc.response.text.strip()
        except (AttributeError, UnicodeDecodeError):
            text = ""
        if text and text[:500] not in message:
            return f"{message}: {text[:500]}" if message else text[:500]
    elif isinstance(body, str) and body and body not in message:
        return f"{message}: {body[:500]}"
    return message


def _retry_after(exc: Any) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return min(60.0, float(value)) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
