"""The vLLM engine calls shared by the backend (vllm_backend.py) and its data-parallel workers
(vllm_data_parallel.py): one offline `generate` call over prepared prompts, the engine's facts,
and stopping an engine.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

Answer = tuple[str, str | None, int]
"""What an engine returns per prompt: text, finish_reason, number of completion tokens."""


def engine_facts(llm: Any) -> dict[str, Any]:
    config = llm.model_config
    return {
        "max_model_len": int(config.max_model_len),
        "dtype": str(config.dtype).removeprefix("torch."),
    }


def generate_batch(llm: Any, prompts: Sequence[tuple[list[int], dict[str, Any]]]) -> list[Answer]:
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


def shutdown_engine(llm: Any) -> None:
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

