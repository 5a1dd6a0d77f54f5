"""rbe against a real vLLM server: its throughput as a share of the server's own saturated rate.

Starts `vllm.entrypoints.openai.api_server` on loopback with the embedded model (as
bench_judge_concurrency.py does), then:

1. saturation: a closed-loop flood (`--flood-concurrency` clients, each sending its next request
   as soon as its last one is answered, PersonaGym-like prompts at the benchmark's max_tokens) for
   `--flood-s` seconds after a warm-up; completion tokens per second over that time are the
   server's saturated throughput on this machine;
2. rbe: `rbe run --tasks personagym-light --limit N` with default flags, the model under test and
   the judge both served by this server (one model, two names would be two engines: the judge is
   the same served model), and its completion tokens per second over the span from the server's
   first to its last busy moment, read from vLLM's Prometheus counters (`/metrics`), polled every
   `--poll-s` seconds;
3. replay: the requests of that rbe run again, `--flood-concurrency` at a time with no
   dependencies between them (a nonce defeats the prefix cache): the same work at the server's
   own pace. rbe's rate over the replay's is the share that counts; the flood of step 1 has
   short prompts, so it measures decoding alone, while PersonaGym's prompts are long.

Prints the rates and ratios and their ratio, rbe's client CPU per call, and the load average. Run in the
vLLM env (see bench/README.md):

    .venv-vllm/bin/python bench/bench_vllm_saturation.py [--personas 8] [--flood-concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("bench_judge_concurrency", _here / "bench_judge_concurrency.py")
jc = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(jc)  # type: ignore[union-attr]

MODEL = "judge"
_METRIC = re.compile(r"^(vllm:generation_tokens_total|vllm:num_requests_running)(?:\{[^}]*\})?\s+([0-9.eE+-]+)$")


def metrics(base: str) -> dict[str, float]:
    """vLLM's generation-token counter and running-requests gauge (summed over label sets)."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        found = _METRIC.match(line.strip())
        if found:
            out[found.group(1)] = out.get(found.group(1), 0.0) + float(found.group(2))
    return out


class Poller:
    """Samples (time, generated tokens, running requests) in a thread until stopped."""

    def __init__(self, base: str, every_s: float):
        self.base, self.every_s = base, every_s
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                m = metrics(self.base)
                self.samples.append((time.monotonic(), m.get("vllm:generation_tokens_total", 0.0),
                                     m.get("vllm:num_requests_running", 0.0)))
            except OSError:
                pass
            self._stop.wait(self.every_s)

    def rate_between(self, start: float, end: float) -> tuple[float, float, float]:
        """(tokens, seconds, tokens/s) between the samples nearest `start` and `end`."""
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return 0.0, 0.0, 0.0
        (t0, n0, _), (t1, n1, _) = inside[0], inside[-1]
        return n1 - n0, t1 - t0, (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def busy_rate(self) -> tuple[float, float, float]:
        """(tokens, seconds, tokens/s) from the first to the last sample with requests running."""
        busy = [i for i, (_, _, running) in enumerate(self.samples) if running > 0]
        if not busy:
            return 0.0, 0.0, 0.0
        first, last = max(0, busy[0] - 1), min(len(self.samples) - 1, busy[-1] + 1)
        (t0, n0, _), (t1, n1, _) = self.samples[first], self.samples[last]
        return n1 - n0, t1 - t0, (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


async def replay(url: str, concurrency: int, calls: list[dict[str, Any]]) -> None:
    """rbe's own requests again, `concurrency` at a time, no dependencies between them: the same
    work at the server's pace. A nonce opens each prompt so vLLM's prefix cache (warm from the
    rbe run) does not make the replay cheaper than the run."""
    import aiohttp

    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, call: dict[str, Any], session: aiohttp.ClientSession) -> None:
        request = call["request"]
        messages = [dict(m) for m in request["messages"]]
        messages[0]["content"] = f"[replay {i}] " + messages[0]["content"]
        body = {"model": MODEL, "messages": messages, "temperature": 0.0, "top_p": 1.0,
                "max_tokens": request["params"]["max_tokens"]}
        async with gate, session.post(f"{url}/chat/completions", json=body) as response:
            await response.read()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1800)) as session:
        await asyncio.gather(*(one(i, c, session) for i, c in enumerate(calls)))


async def flood(url: str, concurrency: int, seconds: float, max_tokens: int) -> None:
    import aiohttp

    prompt = ("Adopt the identity of a retired starship pilot. Answer the questions while staying in "
              "strict accordance with the nature of this identity.")
    deadline = time.monotonic() + seconds

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = {"model": MODEL, "max_tokens": max_tokens, "temperature": 0.0,
                    "messages": [{"role": "system", "content": prompt},
                                 {"role": "user", "content": f"Question {i}.{n}: describe your day in detail."}]}
            async with session.post(f"{url}/chat/completions", json=body) as response:
                await response.read()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
        await asyncio.gather(*(client(i, session) for i in range(concurrency)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="safetensors model folder (default: the embedded model)")
    parser.add_argument("--personas", type=int, default=8)
    parser.add_argument("--flood-concurrency", type=int, default=64)
    parser.add_argument("--flood-s", type=float, default=60.0)
    parser.add_argument("--max-tokens", type=int, default=64, help="answers' and the flood's max tokens")
    parser.add_argument("--judge-max-tokens", type=int, default=128)
    parser.add_argument("--poll-s", type=float, default=0.25)
    parser.add_argument("--start-timeout", type=float, default=600)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds for the rbe run")
    parser.add_argument("--log", default=str(Path(tempfile.gettempdir()) / "rbe_bench_vllm_saturation.log"))
    args = parser.parse_args()

    if args.model:
        folder = Path(args.model)
    else:
        from rolebench_eval.embedded import embedded_gguf_path, ensure_safetensors_copy

        folder = ensure_safetensors_copy(embedded_gguf_path())
    port = jc.free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
               "--served-model-name", MODEL, "--host", "127.0.0.1", "--port", str(port),
               "--enforce-eager", "--max-model-len", "4096"]
    env = {**jc.SERVER_ENV, **os.environ}
    with Path(args.log).open("w") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            jc.wait_until_up(server, f"{base}/health", args.start_timeout)
            url = f"{base}/v1"
            asyncio.run(flood(url, 4, 5.0, args.max_tokens))  # warm-up
            with Poller(base, args.poll_s) as poller:
                flood_start = time.monotonic()
                asyncio.run(flood(url, args.flood_concurrency, args.flood_s, args.max_tokens))
            # Over the whole busy span, the drain after the deadline included (a slight
            # understatement): vLLM's counter moves in lumps, so a window inside the flood
            # measured nothing useful on a slow machine (4 tok/s where its log said 95).
            sat_tokens, sat_s, saturated = poller.busy_rate()
            del flood_start
            print(f"saturated (closed loop, {args.flood_concurrency} clients, {args.flood_s:g} s): "
                  f"{sat_tokens:,.0f} tokens in {sat_s:.1f} s = {saturated:,.1f} tok/s; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)
            results = Path(tempfile.mkdtemp(prefix="rbe_vllm_sat_"))
            rbe = [sys.executable, "-m", "rolebench_eval.cli", "run", "--tasks", "personagym-light",
                   "--limit", str(args.personas), "--base-url", url, "--model", MODEL,
                   "--judge", f"openai:{MODEL},base_url={url}", "--max-tokens", str(args.max_tokens),
                   "--judge-max-tokens", str(args.judge_max_tokens), "--results-dir", str(results),
                   # vLLM refuses top_p=0.0 (400): greedy as top_p 1.0 (recorded in the manifest)
                   "--greedy-top-p", "one",
                   "--no-progress", "--no-leaderboard"]
            clean = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
            load = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            with Poller(base, args.poll_s) as poller:
                done = subprocess.run(rbe, env=clean, capture_output=True, text=True, timeout=args.timeout)
            wall = time.monotonic() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            tokens, span, rate = poller.busy_rate()
            calls = _calls(results)
            print(f"rbe (default flags, {args.personas} personas): exit {done.returncode}, calls made "
                  f"{calls.get('made')}, failed {calls.get('failed')}; {tokens:,.0f} tokens over a busy span of "
                  f"{span:.1f} s = {rate:,.1f} tok/s = **{rate / saturated:.0%}** of saturated "
                  f"(whole command {wall:.1f} s); rbe CPU {cpu:.1f} s"
                  + (f" ({1000 * cpu / calls['made']:.2f} ms per call, start-up included)" if calls.get("made") else "")
                  + f"; load average {load:.1f} at the start")
            if done.returncode != 0:
                print(done.stderr[-2000:])
            calls_made = [json.loads(line) for path in results.glob("runs/*/calls/*.jsonl")
                          for line in path.read_text().splitlines() if line.strip()]
            if calls_made:
                with Poller(base, args.poll_s) as poller:
                    asyncio.run(replay(url, args.flood_concurrency, calls_made))
                r_tokens, r_span, r_rate = poller.busy_rate()
                print(f"replay of rbe's {len(calls_made)} requests, {args.flood_concurrency} at a time, no "
                      f"dependencies: {r_tokens:,.0f} tokens in {r_span:.1f} s = {r_rate:,.1f} tok/s; rbe = "
                      f"**{rate / r_rate:.0%}** of it (same work; load average {os.getloadavg()[0]:.1f})"
                      if r_rate else "replay: no tokens measured")
        finally:
            jc.stop(server)


def _calls(results: Path) -> dict[str, Any]:
    found = sorted(results.glob("runs/*/results.json"))
    return json.loads(found[0].read_text()).get("calls", {}).get("total", {}) if found else {}


if __name__ == "__main__":
    main()
