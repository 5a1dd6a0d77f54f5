"""A simulated continuous-batching OpenAI-compatible server, for benchmarks of rbe's scheduling.

Model of the engine (what vLLM and friends do, reduced to its timing): at most `slots`
sequences run at once, more wait in a FIFO queue; each engine step gives every running sequence
one token, and a step costs `step_s * (1 + alpha * (batch - 1))`, so a full batch is slower per
step but much faster per token. `alpha` is derived from the batching gain the caller asks for:
gain = throughput at full slots / throughput at batch 1 = slots / (1 + alpha * (slots - 1)).
The theoretical peak is therefore `gain / step_s` tokens per second.

Output lengths are drawn per request from a log-normal (median and spread per kind of prompt),
clipped to the request's max_tokens, seeded by the request's own content: the same request gets
the same length whatever order requests arrive in, so runs of different schedulers see the same
work. Replies are shaped for PersonaGym (score examples in `Score N: Response - ...` blocks, judge
replies in `(N) Evaluation: ... Therefore, the final score is K` segments) so that rbe parses
them; the kind is detected from the prompt text.

Optional rate limits (requests/s, tokens/s; token buckets with one second of burst) answer 429
with `Retry-After` (seconds, fractional: this server's time is scaled).

The engine wakes only when a sequence finishes or a request arrives, not at every step, so it
costs little CPU; when it wakes late (a busy machine) it applies the steps that should have
happened and delivers late, and reports how late (`max_lag_s`), so a figure measured on an
overloaded machine says so. The server runs in a daemon thread, listens on 127.0.0.1 only, and
stops by itself after `lifetime_s`.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import json
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

# Median and log-normal sigma of the completion length per kind of prompt (tokens).
DEFAULT_LENGTHS: dict[str, tuple[float, float]] = {
    "answer": (160.0, 0.6),
    "examples": (220.0, 0.4),  # per rubric (PersonaGym's batched examples have up to 5)
    "judge": (110.0, 0.4),  # per rubric segment
    "other": (100.0, 0.6),
}
_WORDS = ("the", "persona", "would", "answer", "this", "question", "with", "care", "and", "detail")


@dataclass(frozen=True)
class SimConfig:
    slots: int = 64
    gain: float = 13.6  # batching gain at full slots, 1 <= gain <= slots
    step_s: float = 0.001  # one engine step at batch 1 (the time scale of the simulation)
    models: tuple[str, ...] = ("sim-model",)
    seed: int = 0
    lengths: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_LENGTHS))
    requests_per_s: float | None = None  # rate limit on requests (429 beyond)
    tokens_per_s: float | None = None  # rate limit on prompt + completion tokens (429 beyond)
    lifetime_s: float = 900.0  # the server stops by itself after this long
    keep_log: bool = True  # keep one record per request (for the benchmark's chain bound)

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError(f"slots must be >= 1, got {self.slots}")
        if not 1.0 <= self.gain <= self.slots:
            raise ValueError(f"gain must lie in [1, slots={self.slots}], got {self.gain}")
        if self.step_s <= 0:
            raise ValueError(f"step_s must be > 0, got {self.step_s}")

    @property
    def alpha(self) -> float:
        return 0.0 if self.slots == 1 else (self.slots / self.gain - 1.0) / (self.slots - 1)

    def step_time(self, batch: int) -> float:
        return self.step_s * (1.0 + self.alpha * (batch - 1))

    @property
    def peak_tokens_per_s(self) -> float:
        return self.slots / self.step_time(self.slots)


@dataclass
class _Sequence:
    remaining: int
    done: asyncio.Future[float]  # resolves to the engine time at which the last token came


def classify(messages: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The kind of a PersonaGym request ("examples", "judge", "answer", "other") and its rubric
    items (the strings of the prompt's `Rubrics:` list, decoded; for an answer: the question)."""
    text = "\n".join(str(m.get("content", "")) for m in messages)
    user = str(messages[-1].get("content", "")) if messages else ""
    if "asked to create examples of each score category" in text:
        return "examples", _rubric_items(user)
    if "evaluate persona responses" in text:
        return "judge", _rubric_items(user)
    roles = [m.get("role") for m in messages]
    if roles[:1] == ["system"] and roles[-1:] == ["user"]:
        return "answer", [user]
    return "other", [user]


def _rubric_items(user: str) -> list[str]:
    # The prompt ends with `Rubrics:` and the Python repr of a list of strings (reference format).
    head, sep, tail = user.rpartition("Rubrics:")
    try:
        items = ast.literal_eval(tail.strip()) if sep else None
    except (ValueError, SyntaxError):
        items = None
    return [str(i) for i in items] if isinstance(items, list) and items else [user]


def _words(n: int, rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(max(1, n)))


def reply_text(kind: str, n_items: int, tokens: int, rng: random.Random) -> str:
    """A reply of about `tokens` words that rbe's PersonaGym parsers accept."""
    if kind == "examples":
        per = max(1, tokens // (5 * n_items))
        blocks = [
            f"Rubric {r + 1} Examples:\n"
            + "\n\n".join(f"Score {s}: Response - {_words(per, rng)}" for s in range(1, 6))
            for r in range(n_items)
        ]
        return "\n\n".join(blocks)
    if kind == "judge":
        per = max(1, tokens // n_items - 7)
        return "\n".join(
            f"({i + 1}) Evaluation: {_words(per, rng)}. Therefore, the final score is {rng.randint(1, 5)}"
            for i in range(n_items)
        )
    return _words(tokens, rng)


class _Bucket:
    """A token bucket: `rate` per second, one second of burst."""

    def __init__(self, rate: float, now: float):
        self.rate, self.level, self.stamp = rate, rate, now

    def take(self, cost: float, now: float) -> float | None:
        """Take `cost` and return None, or return the seconds to wait until it is available."""
        self.level = min(self.rate, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        cost = min(cost, self.rate)  # a request larger than the burst still passes when full
        if self.level >= cost:
            self.level -= cost
            return None
        return (cost - self.level) / self.rate


class SimServer:
    """Use as a context manager: `with SimServer(SimConfig()) as server: server.base_url`."""

    def __init__(self, config: SimConfig):
        self.config = config
        self.port = 0
        self.log: list[dict[str, Any]] = []
        self._counts = {"requests": 0, "completed": 0, "rate_limited": 0, "bad_requests": 0}
        self._tokens = 0
        self._prompt_tokens = 0
        self._busy_token_time = 0.0  # sum over steps of batch * step time (for the mean batch)
        self._busy_time = 0.0
        self._max_running = 0
        self._max_lag = 0.0
        # (start, end, batch) of each stretch of engine steps at one batch size (loop time),
        # for the batch-over-time profile of a run.
        self.timeline: list[tuple[float, float, int]] = []
        self._first_arrival: float | None = None
        self._last_done: float | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> SimServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread = threading.Thread(target=self._serve, name="sim-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise RuntimeError(f"simulated server did not start: {self._error!r}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._arrived = asyncio.Event()
        self._waiting: deque[_Sequence] = deque()
        self._running: list[_Sequence] = []
        now = self._loop.time()
        self._buckets = [
            (kind, _Bucket(rate, now))
            for kind, rate in (("requests", self.config.requests_per_s), ("tokens", self.config.tokens_per_s))
            if rate
        ]
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        engine = asyncio.create_task(self._engine())
        self._ready.set()
        try:
            await asyncio.wait_for(self._stop.wait(), self.config.lifetime_s)
        except asyncio.TimeoutError:
            pass  # lifetime over: stop by itself
        finally:
            engine.cancel()
            await runner.cleanup()

    # -- engine --------------------------------------------------------------------------------

    async def _engine(self) -> None:
        loop = asyncio.get_running_loop()
        clock = loop.time()  # engine time: may trail the wall clock when the machine is busy
        while True:
            while self._waiting and len(self._running) < self.config.slots:
                self._running.append(self._waiting.popleft())
            if not self._running:
                self._arrived.clear()
                await self._arrived.wait()
                clock = loop.time()
                continue
            batch = len(self._running)
            self._max_running = max(self._max_running, batch)
            dt = self.config.step_time(batch)
            steps = min(s.remaining for s in self._running)
            target = clock + steps * dt
            if batch < self.config.slots and not self._waiting:
                # A new request can join at the next step boundary: wake on arrival.
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), max(0.0, target - loop.time()))
                    steps = min(steps, max(1, math.ceil((loop.time() - clock) / dt)))
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep(max(0.0, target - loop.time()))
            if self.config.keep_log:
                self.timeline.append((clock, clock + steps * dt, batch))
            clock += steps * dt
            if loop.time() < clock:  # the step in progress when a request arrived
                await asyncio.sleep(clock - loop.time())
            self._max_lag = max(self._max_lag, loop.time() - clock)
            self._tokens += steps * batch
            self._busy_time += steps * dt
            self._busy_token_time += steps * dt * batch
            still = []
            for seq in self._running:
                seq.remaining -= steps
                if seq.remaining <= 0:
                    seq.done.set_result(clock)
                else:
                    still.append(seq)
            self._running = still

    # -- HTTP ----------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "owned_by": "sim", "root": f"sim/{m}", "max_model_len": 32768}
            for m in self.config.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        self._counts["requests"] += 1
        try:
            body = await request.json()
            messages = body["messages"]
            model = body["model"]
            max_tokens = int(body.get("max_tokens") or 4096)
            if not isinstance(messages, list) or not messages:
                raise ValueError("messages must be a non-empty list")
        except (ValueError, KeyError, TypeError) as exc:
            self._counts["bad_requests"] += 1
            return _error(400, f"bad request: {exc}")
        if model not in self.config.models:
            self._counts["bad_requests"] += 1
            return _error(404, f"model {model!r} not served")
        kind, items = classify(messages)
        digest = hashlib.sha256(
            json.dumps([self.config.seed, messages], sort_keys=True).encode()
        ).digest()
        rng = random.Random(digest)
        median, sigma = self.config.lengths.get(kind, self.config.lengths["other"])
        n_items = len(items) if kind in ("examples", "judge") else 1
        drawn = int(round(median * n_items * math.exp(rng.gauss(0.0, sigma))))
        tokens = max(1, min(max_tokens, drawn))
        prompt_tokens = 4 * len(messages) + sum(len(str(m.get("content", ""))) for m in messages) // 4
        for bucket_kind, bucket in self._buckets:
            cost = 1.0 if bucket_kind == "requests" else float(prompt_tokens + tokens)
            wait = bucket.take(cost, arrival)
            if wait is not None:
                self._counts["rate_limited"] += 1
                return _error(429, f"rate limit on {bucket_kind} reached", retry_after=wait)
        if self._first_arrival is None:
            self._first_arrival = arrival
        seq = _Sequence(tokens, loop.create_future())
        self._waiting.append(seq)
        self._arrived.set()
        await seq.done
        done = loop.time()
        self._last_done = done
        self._counts["completed"] += 1
        self._prompt_tokens += prompt_tokens
        if self.config.keep_log:
            self.log.append(
                {"kind": kind, "items": items, "completion_tokens": tokens,
                 "arrival": arrival, "done": done}
            )
        text = reply_text(kind, n_items, tokens, rng)
        return web.json_response(
            {
                "id": f"sim-{digest.hex()[:16]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length" if drawn > max_tokens else "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": tokens,
                    "total_tokens": prompt_tokens + tokens,
                },
            }
        )

    # -- report --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """What the server measured: tokens, span (first accepted request to last reply),
        throughput over that span, the theoretical peak, mean batch while busy, lag."""
        span = (
            self._last_done - self._first_arrival
            if self._first_arrival is not None and self._last_done is not None
            else 0.0
        )
        peak = self.config.peak_tokens_per_s
        throughput = self._tokens / span if span > 0 else 0.0
        return {
            **self._counts,
            "completion_tokens": self._tokens,
            "prompt_tokens": self._prompt_tokens,
            "span_s": span,
            "throughput_tokens_per_s": throughput,
            "peak_tokens_per_s": peak,
            "share_of_peak": throughput / peak,
            "mean_batch_while_busy": self._busy_token_time / self._busy_time if self._busy_time else 0.0,
            "busy_fraction": self._busy_time / span if span > 0 else 0.0,
            "max_running": self._max_running,
            "max_lag_s": self._max_lag,
            "first_arrival": self._first_arrival,
        }

    def batch_profile(self, parts: int = 10) -> list[float]:
        """Mean running batch (idle counts as 0) in each of `parts` equal slices of the span."""
        start, end = self._first_arrival, self._last_done
        if start is None or end is None or end <= start:
            return []
        width = (end - start) / parts
        sums = [0.0] * parts
        for a, b, batch in self.timeline:
            for i in range(max(0, int((a - start) // width)), min(parts, int((b - start) // width) + 1)):
                lo, hi = start + i * width, start + (i + 1) * width
                sums[i] += batch * max(0.0, min(b, hi) - max(a, lo))
        return [v / width for v in sums]


def _error(status: int, message: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": f"{retry_after:.3f}"} if retry_after is not None else None
    body = {"error": {"message": message, "type": "sim", "code": status}}
    return web.json_response(body, status=status, headers=headers)


async def serve_instant(models: tuple[str, ...], words: int = 6, announce: Any = print) -> None:
    """An endpoint that answers every request at once (no engine, no queue): what is left of a
    run's time is the client's. Replies are short (`words` words per answer, one word per score
    example and evaluation) and parse as PersonaGym's; runs until cancelled or killed."""

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        kind, items = classify(body["messages"])
        n_items = len(items) if kind in ("examples", "judge") else 1
        tokens = words if kind not in ("examples", "judge") else (5 if kind == "examples" else 8) * n_items
        text = reply_text(kind, n_items, tokens, random.Random(len(body["messages"][-1]["content"])))
        return web.json_response({
            "id": "instant", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": tokens, "total_tokens": 100 + tokens},
        })

    async def listed(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "owned_by": "sim", "root": f"sim/{m}"} for m in models]})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/v1/models", listed)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    announce(f"serving {', '.join(models)} on http://127.0.0.1:{port}/v1 (instant)")
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--gain", type=float, default=13.6)
    parser.add_argument("--step-ms", type=float, default=1.0)
    parser.add_argument("--model", action="append", default=None)
    parser.add_argument("--requests-per-s", type=float, default=None)
    parser.add_argument("--tokens-per-s", type=float, default=None)
    parser.add_argument("--lifetime-s", type=float, default=600.0)
    parser.add_argument("--instant", action="store_true",
                        help="answer every request at once with short replies (client overhead benchmarks)")
    args = parser.parse_args()
    if args.instant:
        try:
            asyncio.run(asyncio.wait_for(
                serve_instant(tuple(args.model or ["sim-model"]), announce=lambda m: print(m, flush=True)),
                args.lifetime_s))
        except (KeyboardInterrupt, asyncio.TimeoutError):
            pass
        return
    config = SimConfig(
        slots=args.slots, gain=args.gain, step_s=args.step_ms / 1000.0,
        models=tuple(args.model or ["sim-model"]), requests_per_s=args.requests_per_s,
        tokens_per_s=args.tokens_per_s, lifetime_s=args.lifetime_s, keep_log=False,
    )
    with SimServer(config) as server:
        print(f"serving {', '.join(config.models)} on {server.base_url} for {args.lifetime_s:g} s "
              f"(peak {config.peak_tokens_per_s:,.0f} tok/s); Ctrl-C stops", flush=True)
        try:
            server._thread.join()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            pass
    print(json.dumps(server.stats(), indent=2))


if __name__ == "__main__":
    main()
