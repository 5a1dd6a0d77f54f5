"""One chat-completions HTTP attempt on aiohttp, classified for the lane (scheduling/api_lane.py).

Why not the `openai` client for this one request: on the hot path of a run (thousands of calls to
a local server) it cost about 3 ms of client CPU per call (pydantic transforms of the request,
model construction of the reply, httpx's pure-Python HTTP), where aiohttp's C parser and one
`json.dumps` cost a fraction of that (bench/README.md, "Client overhead per call"). The endpoint
check (`/v1/models`) still uses the `openai` client. The classification is the one the `openai`
client's exception classes gave (and the messages keep its wording, "Error code: N - message"),
so run records look the same:

- 200 with a well-formed body: OK; a garbled body (HTML, truncated JSON, no choices): RETRY as
  a server error ("malformed response");
- 401 and 404: FATAL (key rejected, model unknown: every request would fail);
- 429: RETRY rate_limited, with Retry-After; 5xx: RETRY server_error;
- other statuses (400, 403, 409, 422...): FINAL, this request is wrong;
- timeout and connection errors: RETRY.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from rolebench_eval.errors import BackendError
from rolebench_eval.requests import Completion, Usage
from rolebench_eval.scheduling.api_lane import FATAL, FINAL, OK, RETRY, AttemptOutcome
from rolebench_eval.secrets import redact


@dataclass
class ChatClient:
    """The HTTP session of one replica and the proxy its URL goes through (if any)."""

    session: aiohttp.ClientSession
    url: URL  # the chat-completions URL, credentials taken out (they are the session's auth)
    proxy: URL | None
    proxy_auth: aiohttp.BasicAuth | None

    async def close(self) -> None:
        await self.session.close()


def open_session(url: str, api_key: str, timeout_s: float) -> ChatClient:
    """A client for one replica, created inside the running loop. No connection limit: the lane
    decides how many requests are in flight. The proxy variables (HTTPS_PROXY, NO_PROXY...) apply
    as they did with the openai client, looked up once here: aiohttp's `trust_env` would look
    them (and ~/.netrc) up in a worker thread on every request."""
    target = URL(url)
    try:
        proxy, proxy_auth = get_env_proxy_for_url(target)
    except LookupError:
        proxy, proxy_auth = None, None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target.user is not None:
        # Credentials in the URL (a server behind basic auth): sent as basic auth, replacing the
        # bearer key, as the openai client (httpx) did; aiohttp refuses both at once.
        headers["Authorization"] = _basic_auth(target.user, target.password or "")
        target = target.with_user(None)
    else:
        headers["Authorization"] = f"Bearer {api_key}"
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers=headers,
        cookie_jar=aiohttp.DummyCookieJar(),  # an API sets no cookies worth keeping
    )
    return ChatClient(session, target, proxy, proxy_auth)


def _basic_auth(user: str, password: str) -> str:
    """The Authorization header's value; latin-1, as aiohttp's BasicAuth encoded it (deprecated
    from aiohttp 3.14 for `encode_basic_auth`, which older versions lack)."""
    encode = getattr(aiohttp, "encode_basic_auth", None)
    if encode is not None:
        return str(encode(user, password, encoding="latin1"))
    return str(aiohttp.BasicAuth(user, password).encode())


async def post_chat(client: ChatClient, body: dict[str, Any], *, model: str,
                    shown: str, timeout_s: float) -> AttemptOutcome:
    """POST one chat request to the client's URL and classify what came back."""
    payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
    try:
        async with client.session.post(client.url, data=payload, proxy=client.proxy, proxy_auth=client.proxy_auth) as response:
            status = response.status
            raw = await response.read()
            retry_after = response.headers.get("retry-after")
    except asyncio.TimeoutError:
        return AttemptOutcome(RETRY, failure="timeout", error=f"timed out after {timeout_s:g} s")
    except (aiohttp.ClientError, OSError) as exc:
        # Refused, reset, closed mid-reply: the openai client said "Connection error." for all.
        return AttemptOutcome(RETRY, failure="connection", error=f"connection error: Connection error. ({type(exc).__name__})")
    if status == 200:
        return _parse_ok(raw)
    message, detail = _error_message(status, raw)
    if status == 401:
        return AttemptOutcome(FATAL, exception=BackendError(f"{shown}: API key rejected: {redact(message)}"))
    if status == 404:
        return AttemptOutcome(FATAL, exception=BackendError(f"{shown}: model {model!r} not found: {redact(message)}"))
    if status == 429:
        return AttemptOutcome(RETRY, failure="rate_limited", error=f"HTTP 429 rate limited: {message}",
                              retry_after_s=_retry_after(retry_after))
    if status >= 500:
        return AttemptOutcome(RETRY, failure="server_error", error=f"HTTP {status} server error: {message}")
    # 400 and friends: this request is wrong (too long, bad parameter); retrying gives the same.
    text = f"{message}: {detail}" if detail and detail not in message else message
    return AttemptOutcome(FINAL, completion=Completion.failure(f"HTTP {status}: {text}"))


def _parse_ok(raw: bytes) -> AttemptOutcome:
    try:
        data = json.loads(raw)
        choice = data["choices"][0]
        content = choice["message"].get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError(f"message content is a {type(content).__name__}")
        usage = data.get("usage") or {}
        completion = Completion(
            text=content or "",
            finish_reason=choice.get("finish_reason"),
            usage=Usage(prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens")),
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        # A garbled reply (a proxy's HTML page, truncated JSON): the server side misbehaves.
        return AttemptOutcome(RETRY, failure="server_error", error=f"malformed response: {exc!r}")
    return AttemptOutcome(OK, completion=completion)


def _error_message(status: int, raw: bytes) -> tuple[str, str]:
    """("Error code: N - message", the server's own words when the message lacks them). OpenAI
    bodies are {"error": {"message": ...}}; FastAPI servers answer {"detail": ...}, proxies text."""
    text = raw.decode("utf-8", "replace").strip()
    message = f"Error code: {status}"
    try:
        body: Any = json.loads(text)
    except ValueError:
        return message, text[:500]
    # As the openai client kept it: the inner "error" object of an OpenAI-shaped body.
    data = body.get("error", body) if isinstance(body, dict) else body
    inner = data.get("message") if isinstance(data, dict) else None
    if isinstance(inner, str) and inner:
        message += f" - {inner}"
    detail = ""
    if isinstance(data, dict):
        found = data.get("detail") or data.get("message") or data.get("error")
        detail = str(found) if found else ""
    elif isinstance(data, str):
        detail = data[:500]
    return message, detail


def _retry_after(value: str | None) -> float | None:
    try:
        return min(60.0, float(value)) if value is not None else None
    except ValueError:
        return None
