"""Guided output: replies constrained to a regex (`ChatRequest.guided_regex`).

How each backend constrains decoding:
- transformers (hf_backend): a logits processor over llguidance (`llguidance`, guidance-ai; the
  same library vLLM offers as its `guidance` structured-output backend). It masks, at every step
  and for every row of a batch, the tokens that cannot continue a match of the row's regex; once
  the regex is complete only end-of-sequence is allowed.
- vLLM offline (vllm_backend): `SamplingParams(structured_outputs=StructuredOutputsParams(regex=...))`.
- OpenAI-compatible servers (openai_backend): `structured_outputs: {"regex": ...}` in the request
  body, which vLLM's server (0.10 and later) reads. Servers that do not know the field ignore it
  silently (older vLLM, llama.cpp) or reject it (the OpenAI API); `unguided_reply_problem`
  catches the first, the backend turns the second into a one-line error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from rolebench_eval.errors import BackendError
from rolebench_eval.requests import ChatRequest, Completion

JUDGE_OUTPUTS: tuple[str, ...] = ("free", "guided")
# What a free-output server should be told instead (in one-line errors).
FREE_ADVICE = "use --judge-output free for this judge"


def structured_outputs_body(regex: str) -> dict[str, Any]:
    """The request-body field of an OpenAI-compatible server that takes a regex (vLLM >= 0.10)."""
    return {"structured_outputs": {"regex": regex}}


def reply_matches(request: ChatRequest, text: str) -> bool:
    """Whether `text` matches the request's guided regex in full (True when not guided)."""
    if request.guided_regex is None:
        return True
    return re.fullmatch(request.guided_regex, text) is not None


def unguided_reply_problem(request: ChatRequest, completion: Completion) -> str | None:
    """Why a finished reply shows that its guided regex was not applied, or None.

    A reply cut off at max_tokens legitimately stops mid-format, so only replies that ended on
    their own ("stop") are checked: they must match the regex in full.
    """
    if request.guided_regex is None or not completion.ok or completion.finish_reason != "stop":
        return None
    if reply_matches(request, completion.text or ""):
        return None
    return (
        "the reply does not match the guided-output regex although it ended normally: the "
        "server ignored `structured_outputs` (vLLM 0.10 or later accepts it; older vLLM, "
        f"llama.cpp and the OpenAI API do not); {FREE_ADVICE}"
    )


_GUIDED_ERROR_WORDS = ("structured_outputs", "regex", "unrecognized", "extra")


def guided_outcome(request: ChatRequest, outcome: Any, shown: str) -> Any:
    """An endpoint's classified attempt (scheduling.api_lane.AttemptOutcome) at a guided request,
    made fatal where the server showed it cannot guide: a 4xx about the guided field, or a reply
    that ended normally outside the regex. Fatal: every guided request would fail the same way,
    so the run stops at once with one line instead of recording free output as guided."""
    from rolebench_eval.scheduling.api_lane import FATAL, FINAL, OK, AttemptOutcome

    if request.guided_regex is None:
        return outcome
    completion = outcome.completion
    if outcome.kind == OK and completion is not None:
        problem = unguided_reply_problem(request, completion)
        if problem is not None:
            return AttemptOutcome(FATAL, exception=BackendError(f"{shown}: {problem}"))
    if outcome.kind == FINAL and completion is not None and (completion.error or "").startswith("HTTP 4"):
        error = completion.error or ""
        if any(word in error.lower() for word in _GUIDED_ERROR_WORDS):
            message = (
                f"{shown} rejected a guided-output request (--judge-output guided; {error[:300]}): "
                f"it does not accept `structured_outputs` regexes; {FREE_ADVICE}"
            )
            return AttemptOutcome(FATAL, exception=BackendError(message))
    return outcome


class TokenMasks:
    """llguidance's view of one Hugging Face tokenizer (built once per backend: about 1 s)."""

    def __init__(self, hf_tokenizer: Any, vocab_size: int, eos_ids: Iterable[int]):
        try:
            import llguidance.hf
        except ImportError as exc:  # a dependency of the package; missing only in odd installs
            raise BackendError(
                "guided output with the transformers backend needs the `llguidance` package "
                "(pip install llguidance)"
            ) from exc
        self.eos_ids = sorted(set(eos_ids))
        try:
            self.tokenizer = llguidance.hf.from_tokenizer(
                hf_tokenizer, n_vocab=vocab_size, eos_token=self.eos_ids[0] if self.eos_ids else None
            )
        except ValueError as exc:
            raise BackendError(f"guided output: {exc} (this tokenizer is not a fast tokenizer)") from exc
        self.vocab_size = vocab_size

    def matcher(self, regex: str) -> Any:
        from llguidance import LLMatcher

        matcher = LLMatcher(self.tokenizer, LLMatcher.grammar_from_regex(regex))
        if matcher.is_error():
            raise BackendError(f"guided output: the regex cannot be used: {matcher.get_error()}")
        return matcher


class GuidedLogitsProcessor:
    """A transformers logits processor: row i of the batch follows `regexes[i]` (None: free).

    transformers calls it once per step with the tokens so far; the newest token of each row is
    fed to that row's matcher before the next mask is computed. Rows that ended (an EOS) are left
    alone: transformers pads them from then on.
    """

    def __init__(self, masks: TokenMasks, regexes: Sequence[str | None]):
        self._masks = masks
        self._matchers = [masks.matcher(r) if r is not None else None for r in regexes]
        self._finished = [m is None for m in self._matchers]
        self._started = False
        self.errors: list[str | None] = [None] * len(regexes)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch

        eos = set(self._masks.eos_ids)
        if self._started:
            last = input_ids[:, -1].tolist()
            for row, matcher in enumerate(self._matchers):
                if self._finished[row]:
                    continue
                if last[row] in eos:
                    self._finished[row] = True
                elif not matcher.consume_token(last[row]):
                    self.errors[row] = matcher.get_error() or "token rejected by the regex"
                    self._finished[row] = True
        self._started = True
        width = scores.shape[-1]
        for row, matcher in enumerate(self._matchers):
            if self._finished[row]:
                continue
            bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            allowed = np.zeros(width, dtype=bool)
            n = min(width, bits.shape[0])
            allowed[:n] = bits[:n].astype(bool)
            if matcher.is_stopped() or not allowed.any():
                # The regex is complete (or nothing can continue it): end the reply here.
                allowed[:] = False
                allowed[[t for t in eos if t < width]] = True
            scores[row, torch.from_numpy(~allowed).to(scores.device)] = float("-inf")
        return scores
