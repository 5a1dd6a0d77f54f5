"""Any lm-eval model type (`hf`, `vllm`, `local-chat-completions`, ...) as an rbe backend.

Users can reuse their lm-eval `--model` / `--model_args`. lm-eval's `generate_until` has pitfalls
that would corrupt a role-play evaluation silently; this wrapper detects each one:

- System message dropped: lm-eval's `apply_chat_template` drops the system turn (the persona) when
  a template raises. Prompt models get a prompt rendered here by `render_chat` under the
  system-prompt policy; lm-eval's template code never runs. Chat-API models get the JSON messages,
  and the exact payload lm-eval will post is built (with the model's own `_create_payload`) and
  checked before anything is sent.
- Silent left-truncation: prompt lengths are measured with the model's own `tok_encode` against
  `max_length - max_gen_toks` (lm-eval's own limit) and `overlength_policy` decides.
- No finish reason or token counts: counted with the model's tokenizer and marked as rbe's counts.
- Default stop sequences: `until` is always passed explicitly, so per-model defaults for a missing
  `until` (e.g. `<|endoftext|>`, `\\n\\nHuman:`, `</s>`) never apply; the EOS string that
  lm-eval always appends is recorded in `describe()`.
"""

from __future__ import annotations

import copy
import gc
import importlib.metadata
import json
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from rolebench_eval.backends.base import BackendOptions, ResultCallback
from rolebench_eval.backends.chat_format import load_chat_template, render_chat
from rolebench_eval.backends.fingerprint import text_sha256
from rolebench_eval.errors import BackendError, did_you_mean
from rolebench_eval.requests import ChatRequest, Completion, Usage

FINISH_REASON_NOTE = (
    "finish_reason inferred by rbe: 'length' when the answer re-tokenizes to max_tokens tokens "
    "or more, else 'stop' (lm-eval reports no finish reason)"
)
USAGE_NOTE = "token counts computed by rbe with the model's tokenizer (lm-eval reports none)"
NO_COUNTS_NOTE = (
    "lm-eval reports no finish reason or token counts and this model has no tokenizer: "
    "both unknown"
)
SEED_NOT_APPLIED_NOTE = "seed not applied: lm-eval takes no per-request seed for local models"
OVERLENGTH_POLICIES = ("error", "skip")

REDACTED = "<redacted>"
# Keys whose values are credentials. `(^|_)(key|token)$` catches `api_key`, `hf_token`, `token`
# without catching `tokenizer` or `max_gen_toks`; the two lm-eval options below end in `_token`
# but are model settings that change answers, so they must stay visible.
_SECRET_KEY = re.compile(
    r"api_?key|secret|passw(or)?d|credential|auth|bearer|header|(^|_)(key|token)$", re.I
)
_NOT_SECRET_KEYS = frozenset({"add_bos_token", "think_end_token"})
_SECRET_VALUE = re.compile(r"^(sk-|sk_|hf_|gsk_|xai-|AIza|Bearer\s)")
# Throughput settings do not change what the model answers, so they stay out of the identity
# (changing the batch size must not invalidate a run's cached answers).
_THROUGHPUT_KEYS = frozenset(
    {"batch_size", "max_batch_size", "num_concurrent", "max_retries", "timeout"}
)


def _redact_url(url: str) -> str:
    """Drop `user:password@` and secret-looking query parameters from a URL."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [(k, REDACTED if _SECRET_KEY.search(k) else v) for k, v in parse_qsl(parts.query)]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_model_args(args: dict[str, Any]) -> dict[str, Any]:
    """Model args safe for the manifest and logs: credential values replaced by `<redacted>`."""
    safe: dict[str, Any] = {}
    for key, value in args.items():
        secret_key = bool(_SECRET_KEY.search(key)) and key not in _NOT_SECRET_KEYS
        if secret_key or (isinstance(value, str) and _SECRET_VALUE.match(value)):
            safe[key] = REDACTED
        elif isinstance(value, str):
            safe[key] = _redact_url(value)
        else:
            safe[key] = value
    return safe



class LMEvalBackend:
    """An lm-eval model answering rbe chat requests, with lm-eval's silent failure modes caught.

    `lm` lets a caller share an already-built lm-eval model (built from the same `model_type` and
    `model_args`) between backends with different options, e.g. in tests; otherwise it is built
    here through lm-eval's registry exactly as `lm_eval --model ... --model_args ...` would.
    """

    def __init__(
        self, model_type: str, model_args: str, options: BackendOptions, *, lm: Any = None
    ) -> None:
        from lm_eval.utils import simple_parse_args_string

        if options.overlength_policy not in OVERLENGTH_POLICIES:
            raise BackendError(
                f"unknown overlength policy {options.overlength_policy!r}; "
                f"use one of {OVERLENGTH_POLICIES}"
            )
        self.model_type = model_type
        self.options = options
        parsed = simple_parse_args_string(model_args)
        self._safe_args = redact_model_args(parsed)
        self._chat_template = load_chat_template(options.chat_template)
        self._lm = lm if lm is not None else self._build(model_type, model_args, parsed, options)
        self._chat_mode = self._is_chat_model(self._lm)
        if not self._chat_mode and getattr(self._lm, "tokenizer", None) is None:
            raise BackendError(
                f"lm-eval {model_type}: no tokenizer, so rbe can neither render the chat prompt "
                "nor check its length; give the model a tokenizer (e.g. tokenizer_backend="
                "huggingface,tokenizer=...) or use a chat-completions model type"
            )
        if self._chat_mode and getattr(self._lm, "tokenized_requests", False):
            raise BackendError(
                f"lm-eval {model_type}: tokenized_requests=True cannot carry chat messages; "
                "remove it from the model args"
            )

    @staticmethod
    def _build(
        model_type: str, model_args: str, parsed: dict[str, Any], options: BackendOptions
    ) -> Any:
        from lm_eval.api.registry import get_model, model_registry

        try:
            model_class = get_model(model_type)
        except ValueError:
            raise BackendError(
                f"unknown lm-eval model type {model_type!r}."
                f"{did_you_mean(model_type, model_registry.keys())}"
            ) from None
        # Like lm-eval's CLI, fill batch_size/device from rbe's options, but only where the
        # model args leave them out (passing both would be a duplicate keyword).
        extra: dict[str, Any] = {"batch_size": options.batch_size}
        if options.device != "auto":
            extra["device"] = options.device
        extra = {k: v for k, v in extra.items() if k not in parsed}
        try:
            return model_class.create_from_arg_string(model_args, extra)
        except Exception as exc:  # lm-eval raises whatever its model classes raise
            safe = redact_model_args(parsed)
            raise BackendError(
                f"lm-eval could not build model type {model_type!r} with model args {safe}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    @staticmethod
    def _is_chat_model(lm: Any) -> bool:
        """Chat-API models take JSON messages; every other model takes a rendered prompt."""
        from lm_eval.models.api_models import TemplateAPI
        from lm_eval.models.openai_completions import LocalChatCompletion

        if isinstance(lm, LocalChatCompletion):
            return True
        # e.g. anthropic-chat: an API model without a tokenizer can only be sent messages.
        return isinstance(lm, TemplateAPI) and getattr(lm, "tokenizer", None) is None

    @property
    def lm(self) -> Any:
        """The underlying lm-eval model (to share it with another backend via `lm=`)."""
        return self._model()

    def _model(self) -> Any:
        if self._lm is None:
            raise BackendError(f"lm-eval {self.model_type}: backend used after close()")
        return self._lm

    @property
    def identity(self) -> str:
        args = {
            k: v
            for k, v in self._safe_args.items()
            if v != REDACTED and k not in _THROUGHPUT_KEYS
        }
        parts = {
            "backend": "lm-eval",
            "model_type": self.model_type,
            "model_args": args,
            "chat_template_sha256": text_sha256(self._chat_template) if self._chat_template else None,
            "system_prompt_policy": self.options.system_prompt_policy,
        }
        return json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)

    def _template_sha256(self) -> str | None:
        if self._chat_template is not None:
            return text_sha256(self._chat_template)
        template = getattr(getattr(self._lm, "tokenizer", None), "chat_template", None)
        if template is None:
            return None
        if not isinstance(template, str):  # some tokenizers hold several named templates
            template = json.dumps(template, sort_keys=True)
        return text_sha256(template)

    def _eos_string(self) -> str | None:
        """The stop string lm-eval appends to every request's `until`."""
        lm = self._model()
        if hasattr(lm, "eos_string"):  # API models
            return lm.eos_string
        tokenizer = getattr(lm, "tokenizer", None)
        return getattr(tokenizer, "eos_token", None)

    def describe(self) -> dict[str, Any]:
        lm = self._model()
        return {
            "backend": "lm-eval",
            "lm_eval_version": importlib.metadata.version("lm_eval"),
            "model_type": self.model_type,
            "model_class": f"{type(lm).__module__}.{type(lm).__qualname__}",
            "model_args": self._safe_args,
            "mode": "chat-messages" if self._chat_mode else "rendered-prompt",
            "max_length": getattr(lm, "max_length", None),
            "chat_template_sha256": None if self._chat_mode else self._template_sha256(),
            "chat_template_override": self.options.chat_template is not None,
            "system_prompt_policy": self.options.system_prompt_policy,
            "overlength_policy": self.options.overlength_policy,
            "stop_sequences_appended_by_lm_eval": [s for s in [self._eos_string()] if s],
            "finish_reason_and_usage": "inferred by rbe from token counts (lm-eval reports none)",
        }

    def _gen_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        params = request.params
        kwargs: dict[str, Any] = {
            # Always a list, even empty: a missing `until` makes some lm-eval models add their
            # own default stop sequences, which would cut answers.
            "until": list(params.stop),
            "max_gen_toks": params.max_tokens,
            "do_sample": params.temperature > 0,
            "temperature": params.temperature,
        }
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        if params.seed is not None and self._chat_mode:
            kwargs["seed"] = params.seed  # the payload's `**gen_kwargs` overrides lm-eval's seed
        return kwargs

    def _count(self, text: str, *, prompt: bool) -> int:
        lm = self._model()
        if not prompt:
            return len(lm.tok_encode(text, add_special_tokens=False))
        # Count exactly as the model's generate_until encodes the prompt (BOS handling included).
        from lm_eval.models.api_models import TemplateAPI

        if isinstance(lm, TemplateAPI):
            return len(lm.tok_encode(text, add_special_tokens=lm.add_bos_token))
        return len(lm.tok_encode(text))

    def _check_chat_payload(
        self, index: int, request: ChatRequest, gen_kwargs: dict[str, Any]
    ) -> None:
        """Build the JSON lm-eval will post and refuse any change to our request.

        lm-eval's chat payload builders silently drop stop sequences beyond four, and for model
        names containing "o1", "o3", "o4" or "5" drop all of them and force temperature 1.
        """
        from lm_eval.models.api_models import JsonChatStr

        lm = self._model()
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        payload = lm._create_payload(
            lm.create_message([JsonChatStr(json.dumps(messages, ensure_ascii=False))]),
            generate=True,
            gen_kwargs=copy.deepcopy(gen_kwargs),
            seed=lm._seed,
            eos=lm.eos_string,
        )
        params = request.params
        sent = json.dumps(payload, ensure_ascii=False)
        problems = [
            f"{m.role} message missing"
            for m in request.messages
            if json.dumps(m.content, ensure_ascii=False)[1:-1] not in sent
        ]
        if "temperature" in payload and float(payload["temperature"]) != params.temperature:
            problems.append(f"temperature {params.temperature} sent as {payload['temperature']}")
        for key in ("max_tokens", "max_completion_tokens"):
            if key in payload and payload[key] != params.max_tokens:
                problems.append(f"max_tokens {params.max_tokens} sent as {key}={payload[key]}")
        if params.top_p is not None and payload.get("top_p") != params.top_p:
            problems.append(f"top_p {params.top_p} sent as {payload.get('top_p')}")
        stops = payload.get("stop", payload.get("stop_sequences")) or []
        dropped = [s for s in params.stop if s not in stops]
        if dropped:
            problems.append(f"stop sequences {dropped} not sent")
        if params.seed is not None and payload.get("seed") != params.seed:
            problems.append(f"seed {params.seed} sent as {payload.get('seed')}")
        if problems:
            raise BackendError(
                f"request {index}: lm-eval {self.model_type} ({type(lm).__name__}) would change "
                f"the request before sending it: {'; '.join(problems)}"
            )

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        from lm_eval.api.instance import Instance
        from lm_eval.models.api_models import JsonChatStr

        lm = self._model()
        # Everything is rendered and checked before lm-eval sees any request, so a configuration
        # error (template, overlength=error, payload change) stops the run before any model call.
        pending: list[tuple[int, Instance, int | None, tuple[str, ...]]] = []
        skipped: list[tuple[int, Completion]] = []
        for index, request in enumerate(requests):
            gen_kwargs = self._gen_kwargs(request)
            notes: tuple[str, ...] = ()
            if self._chat_mode:
                self._check_chat_payload(index, request, gen_kwargs)
                messages = [{"role": m.role, "content": m.content} for m in request.messages]
                context: Any = JsonChatStr(json.dumps(messages, ensure_ascii=False))
                prompt_tokens = None  # the server applies its own template: rbe cannot count it
            else:
                context, notes = render_chat(
                    lm.tokenizer,
                    request.messages,
                    system_prompt_policy=self.options.system_prompt_policy,
                    chat_template=self._chat_template,
                    model_name=f"lm-eval {self.model_type}",
                )
                prompt_tokens = self._count(context, prompt=True)
                # lm-eval's own budget: decoder-only models share max_length between the
                # prompt and the answer; encoder-decoder ones give the encoder all of it.
                limit = lm.max_length - (
                    0 if getattr(lm, "backend", None) == "seq2seq" else request.params.max_tokens
                )
                if prompt_tokens > limit:
                    reason = (
                        f"request {index}: prompt has {prompt_tokens} tokens but lm-eval "
                        f"{self.model_type} fits {max(limit, 0)} (max_length {lm.max_length} - "
                        f"max_tokens {request.params.max_tokens}); lm-eval would silently cut "
                        "the start of the prompt"
                    )
                    if self.options.overlength_policy == "error":
                        raise BackendError(f"{reason}. Use --overlength-policy skip to skip it.")
                    failure = Completion.failure(f"{reason} (overlength_policy=skip)")
                    skipped.append((index, failure))
                    continue
                if request.params.seed is not None and not request.params.greedy:
                    notes = (*notes, SEED_NOT_APPLIED_NOTE)
            instance = Instance("generate_until", {}, (context, gen_kwargs), index)
            pending.append((index, instance, prompt_tokens, notes))
        for index, completion in skipped:
            on_result(index, completion)
        if not pending:
            return

        try:
            # One call with every request, so lm-eval can sort and batch them all at once.
            texts = lm.generate_until([item[1] for item in pending], disable_tqdm=True)
        except Exception as exc:  # anything lm-eval or the model raises fails the whole call
            raise BackendError(
                f"lm-eval {self.model_type}: generate_until failed: {type(exc).__name__}: {exc}"
            ) from exc
        if len(texts) != len(pending):
            raise BackendError(
                f"lm-eval {self.model_type}: {len(texts)} answers for {len(pending)} requests"
            )
        for (index, _, prompt_tokens, notes), text in zip(pending, texts, strict=True):
            on_result(index, self._completion(requests[index], text, prompt_tokens, notes))

    def _completion(
        self, request: ChatRequest, text: str, prompt_tokens: int | None, notes: tuple[str, ...]
    ) -> Completion:
        if self._chat_mode:
            from lm_eval.models.api_models import LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER

            # lm-eval turns a null answer (content filter, reasoning-only reply) or an unparseable
            # response into this placeholder ('' by default): that is a failed call, not an answer.
            if text in ("", LMEVAL_MODEL_NONE_ANSWER_PLACEHOLDER):
                return Completion.failure(
                    f"lm-eval {self.model_type}: empty or null answer (lm-eval maps null content "
                    "and unparseable responses to an empty string)"
                )
            if getattr(self._lm, "tokenizer", None) is None:
                return Completion(text=text, notes=(*notes, NO_COUNTS_NOTE))
        completion_tokens = self._count(text, prompt=False)
        finish = "length" if completion_tokens >= request.params.max_tokens else "stop"
        return Completion(
            text=text,
            finish_reason=finish,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            notes=(*notes, FINISH_REASON_NOTE, USAGE_NOTE),
        )

    def close(self) -> None:
        lm, self._lm = self._lm, None
        if lm is None:
            return
        del lm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
