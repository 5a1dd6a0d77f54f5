"""transformers backend: batched local generation on CPU or GPU with the model's chat template.

A Hugging Face model folder loads directly; a GGUF file is dequantised once into a cached
safetensors folder (see `rolebench_eval.embedded`), which makes later loads take seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rolebench_eval.backends.base import BackendOptions, ResultCallback
from rolebench_eval.backends.chat_format import load_chat_template, render_chat
from rolebench_eval.backends.fingerprint import model_fingerprint, text_sha256
from rolebench_eval.backends.guided import GuidedLogitsProcessor, TokenMasks
from rolebench_eval.embedded import ensure_safetensors_copy
from rolebench_eval.errors import BackendError
from rolebench_eval.requests import ChatRequest, Completion, Usage


def resolve_model_folder(model_path: str) -> tuple[Path, Path]:
    """Return (folder transformers loads, file or folder that identifies the model)."""
    path = Path(model_path).expanduser()
    if not path.exists():
        raise BackendError(f"--model: no such file or folder: {model_path}")
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BackendError(
                f"--model: {model_path} is a file but not a .gguf; give a GGUF file or a "
                "Hugging Face model folder (with config.json)"
            )
        try:
            return ensure_safetensors_copy(path), path
        except Exception as exc:  # a truncated or foreign GGUF raises anything from gguf/torch
            raise BackendError(f"--model: cannot read GGUF file {model_path}: {exc}") from exc
    if not (path / "config.json").is_file():
        raise BackendError(
            f"--model: {model_path} is not a Hugging Face model folder (no config.json)"
        )
    return path, path


class HFBackend:
    """Batched generation with `transformers`: requests are sorted by length and padded left."""

    def __init__(self, model_path: str, options: BackendOptions, *, label: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._options = options
        self._folder, source = resolve_model_folder(model_path)
        self._label = label or model_path
        self._fingerprint = model_fingerprint(source)
        self._chat_template = load_chat_template(options.chat_template)
        device = options.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self._device = device
        dtype: Any = "auto" if options.dtype == "auto" else getattr(torch, options.dtype)
        if dtype == "auto" and device == "cpu":
            # bfloat16 matmuls are fast on these CPUs (AVX512-BF16) and halve memory traffic.
            dtype = torch.bfloat16
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(str(self._folder))
            self._model = AutoModelForCausalLM.from_pretrained(str(self._folder), dtype=dtype)
        except Exception as exc:
            raise BackendError(f"--model: cannot load {model_path}: {exc}") from exc
        self._model.to(device).eval()
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._dtype = str(self._model.dtype)
        self._context = int(
            getattr(self._model.config, "max_position_embeddings", 0) or 1_000_000_000
        )
        self._token_masks: TokenMasks | None = None  # built on the first guided request

    @property
    def identity(self) -> str:
        template = self._chat_template or ""
        return f"hf:{self._fingerprint}:{self._options.system_prompt_policy}:{text_sha256(template)}"

    def describe(self) -> dict[str, Any]:
        import torch
        import transformers

        return {
            "backend": "hf",
            "model": self._label,
            "loaded_from": str(self._folder),
            "fingerprint_sha256": self._fingerprint,
            "device": self._device,
            "dtype": self._dtype,
            "batch_size": self._options.batch_size,
            "context_length": self._context,
            "chat_template_sha256": text_sha256(
                self._chat_template or getattr(self._tokenizer, "chat_template", "") or ""
            ),
            "system_prompt_policy": self._options.system_prompt_policy,
            "overlength_policy": self._options.overlength_policy,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }

    def _render(self, request: ChatRequest) -> tuple[str, tuple[str, ...]]:
        return render_chat(
            self._tokenizer,
            request.messages,
            system_prompt_policy=self._options.system_prompt_policy,
            chat_template=self._chat_template,
            model_name=self._label,
        )

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        prepared: list[tuple[int, list[int], tuple[str, ...]]] = []
        for index, request in enumerate(requests):
            text, notes = self._render(request)
            ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
            budget = len(ids) + request.params.max_tokens
            if budget > self._context:
                reason = (
                    f"prompt of {len(ids)} tokens + max_tokens {request.params.max_tokens} "
                    f"exceeds the context of {self._context} tokens"
                )
                if self._options.overlength_policy == "error":
                    raise BackendError(
                        f"request {index}: {reason}; rerun with --overlength-policy skip to "
                        "record such prompts as skipped (never truncated)"
                    )
                on_result(index, Completion.failure(f"{reason} (overlength_policy=skip)"))
                continue
            prepared.append((index, ids, notes))
        # Same sampling settings batch together; longest first so memory errors surface early.
        # Keys sort by their text: settings may mix None and numbers (top_p unset and top_p=0).
        prepared.sort(key=lambda item: (repr(_params_key(requests[item[0]])), -len(item[1])))
        batch: list[tuple[int, list[int], tuple[str, ...]]] = []
        for item in prepared:
            if batch and (
                len(batch) >= self._options.batch_size
                or _params_key(requests[batch[0][0]]) != _params_key(requests[item[0]])
            ):
                self._generate_batch(batch, requests[batch[0][0]], on_result, requests)
                batch = []
            batch.append(item)
        if batch:
            self._generate_batch(batch, requests[batch[0][0]], on_result, requests)

    def _guided_processor(self, rows: Sequence[ChatRequest]) -> GuidedLogitsProcessor | None:
        """The constrained-decoding processor of a batch whose requests carry a guided regex."""
        if all(r.guided_regex is None for r in rows):
            return None
        if self._token_masks is None:
            width = int(self._model.get_output_embeddings().weight.shape[0])
            self._token_masks = TokenMasks(self._tokenizer, width, _eos_ids(self._model, self._tokenizer))
        return GuidedLogitsProcessor(self._token_masks, [r.guided_regex for r in rows])

    def _generate_batch(
        self,
        batch: list[tuple[int, list[int], tuple[str, ...]]],
        example: ChatRequest,
        on_result: ResultCallback,
        requests: Sequence[ChatRequest] = (),
    ) -> None:
        import torch

        params = example.params
        width = max(len(ids) for _, ids, _ in batch)
        pad = self._tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for _, ids, _ in batch])
        mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for _, ids, _ in batch])
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_tokens, "pad_token_id": pad}
        if params.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_k=None)
            kwargs["top_p"] = params.top_p if params.top_p is not None else 1.0
        if params.seed is not None:
            # Seeded per batch: a rerun with the same batches samples the same tokens.
            torch.manual_seed(params.seed)
        if params.stop:
            kwargs["stop_strings"] = list(params.stop)
            kwargs["tokenizer"] = self._tokenizer
        guided = self._guided_processor([requests[index] for index, _, _ in batch])
        if guided is not None:
            kwargs["logits_processor"] = [guided]
        with torch.inference_mode():
            output = self._model.generate(
                input_ids=input_ids.to(self._device), attention_mask=mask.to(self._device), **kwargs
            )
        eos_ids = _eos_ids(self._model, self._tokenizer)
        for row, (index, ids, notes) in enumerate(batch):
            new = output[row, width:].tolist()
            finish = "length"
            for position, token in enumerate(new):
                if token in eos_ids:
                    new = new[:position]
                    finish = "stop"
                    break
            else:
                while new and new[-1] == pad and pad not in eos_ids:
                    new.pop()
            text = self._tokenizer.decode(new, skip_special_tokens=True)
            if params.stop and finish == "length":
                for stop in params.stop:
                    if stop in text:
                        text, finish = text[: text.index(stop)], "stop"
            if guided is not None and guided.errors[row] is not None:
                on_result(index, Completion.failure(f"guided decoding failed: {guided.errors[row]}"))
                continue
            on_result(
                index,
                Completion(
                    text=text,
                    finish_reason=finish,
                    usage=Usage(prompt_tokens=len(ids), completion_tokens=len(new)),
                    notes=notes,
                ),
            )

    def close(self) -> None:
        import gc

        import torch

        del self._model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()



def _params_key(request: ChatRequest) -> tuple[Any, ...]:
    p = request.params
    # Guided rows batch apart: free batches never pay for the constrained-decoding masks.
    return (p.temperature, p.top_p, p.max_tokens, p.seed, p.stop, request.guided_regex is not None)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
