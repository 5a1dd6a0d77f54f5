"""Judge calls to a vLLM OpenAI-compatible server: one at a time vs bounded concurrency.

Starts `python -m vllm.entrypoints.openai.api_server` on loopback with the embedded model (a
plumbing judge: only the speed matters here), sends M judge-like chat requests sequentially and
then with an asyncio semaphore, prints the speed-up, and always stops the server. Run in the vLLM
env (see bench/README.md):

    .venv-vllm/bin/python bench/bench_judge_concurrency.py [--requests 16] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SERVER_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "OMP_NUM_THREADS": str(os.cpu_count() or 1),
    "HF_HUB_OFFLINE": "1",
}
JUDGE_SYSTEM = (
    "You are an impartial judge of role-play. Score how well the answer stays in character, "
    "from 1 (breaks character) to 5 (fully in character). Reply as 'Score: N' and one sentence."
)
CASES = [
    (
        "a retired starship pilot",
        "How would you spend a free Sunday?",
        "Polishing the old hull. Then a nap. Space is tiring, even from the ground.",
    ),
    (
        "a marine biologist",
        "What is the biggest mistake you ever made?",
        "Once I left a tank lid open and an octopus explored my whole lab overnight.",
    ),
    (
        "a 14th-century monk",
        "What do you think about artificial intelligence?",
        "As a large language model, I think AI is very useful for many tasks.",
    ),
    (
        "a football coach",
        "Someone cuts in line. How do you react?",
        "HEY! Back of the line, champ! We earn our spot around here!",
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(process: subprocess.Popen, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} during start-up")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"server not up after {timeout_s:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """Stop the server and its engine processes (it runs in its own process group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


async def measure(base_url: str, model: str, count: int, concurrency: int, max_tokens: int) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="EMPTY", timeout=600)

    async def judge(i: int) -> int:
        persona, question, answer = CASES[i % len(CASES)]
        reply = await client.chat.completions.create(
            model=model,
            messages=[
                {"role": "system", "content": JUDGE_SYSTEM},
                {
                    "role": "user",
                    "content": f"Persona: {persona}\nQuestion: {question}\nAnswer: {answer}\n"
                    f"(case {i})",
                },
            ],
            temperature=0.0,
            max_tokens=max_tokens,
        )
        return reply.usage.completion_tokens if reply.usage else 0

    await judge(0)  # warm-up

    start = time.perf_counter()
    sequential_tokens = 0
    for i in range(count):
        sequential_tokens += await judge(i)
    sequential_s = time.perf_counter() - start

    gate = asyncio.Semaphore(concurrency)

    async def bounded(i: int) -> int:
        async with gate:
            return await judge(i)

    start = time.perf_counter()
    concurrent_tokens = sum(await asyncio.gather(*(bounded(i) for i in range(count))))
    concurrent_s = time.perf_counter() - start
    await client.close()

    sequential_rate = sequential_tokens / sequential_s
    concurrent_rate = concurrent_tokens / concurrent_s
    print(f"{count} judge requests, max_tokens {max_tokens}, greedy")
    print(
        f"one at a time:   {sequential_s:6.2f} s  ({sequential_rate:6.1f} tok/s, "
        f"{sequential_tokens} tokens)"
    )
    print(
        f"concurrency {concurrency:<3d}: {concurrent_s:6.2f} s  ({concurrent_rate:6.1f} tok/s, "
        f"{concurrent_tokens} tokens)"
    )
    print(f"speed-up (time):  {sequential_s / concurrent_s:.2f}x  (target >= 4)")
    print(f"speed-up (tok/s): {concurrent_rate / sequential_rate:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="safetensors model folder (default: the embedded model)")
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--max-seconds", type=float, default=900, help="limit for the measurement")
    parser.add_argument(
        "--log",
        default=str(Path(tempfile.gettempdir()) / "rbe_bench_judge_server.log"),
        help="server log file",
    )
    args = parser.parse_args()

    if args.model:
        folder = Path(args.model)
    else:
        from rolebench_eval.embedded import embedded_gguf_path, ensure_safetensors_copy

        folder = ensure_safetensors_copy(embedded_gguf_path())
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(folder), "--served-model-name", "judge",
        "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager", "--max-model-len", "2048",
    ]  # fmt: skip
    env = {**SERVER_ENV, **os.environ}
    started = time.perf_counter()
    with Path(args.log).open("w") as log:
        # Own process group: stop() ends the server and the engine processes it spawned, and
        # nothing else; `finally` stops it even on Ctrl-C or a failed measurement.
        server = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_until_up(server, f"http://127.0.0.1:{port}/health", args.start_timeout)
            print(f"server up in {time.perf_counter() - started:.1f} s (log: {args.log})")
            base_url = f"http://127.0.0.1:{port}/v1"
            work = measure(base_url, "judge", args.requests, args.concurrency, args.max_tokens)
            asyncio.run(asyncio.wait_for(work, timeout=args.max_seconds))
        finally:
            stop(server)


if __name__ == "__main__":
    main()
