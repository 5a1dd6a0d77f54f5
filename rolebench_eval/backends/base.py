"""The backend interface: a whole list of requests per call, results streamed back as they finish.

Taking the whole list lets batched engines (transformers, vLLM) schedule everything at once and
lets API backends run requests concurrently; the `on_result` callback lets the runner append each
finished call to the run directory immediately, so an interrupted run loses only work in flight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rolebench_eval.requests import ChatRequest, Completion

# The OpenAI API itself: the endpoint of an `openai:` model with no base URL and no $OPENAI_BASE_URL.
# Here, not in openai_backend.py, so that naming a model's endpoint imports no HTTP client.
OPENAI_API_URL = "https://api.openai.com/v1"

ResultCallback = Callable[[int, Completion], None]
"""Called once per request with the request's index in the list and its completion."""


@dataclass(frozen=True)
class BackendOptions:
    """Settings shared by all backends; each backend reads the ones that apply to it."""

    batch_size: int = 16
    # Requests in flight per OpenAI-compatible endpoint (each replica): None adapts between a
    # low start and `max_concurrency` (scheduling/concurrency.py); a number pins it (--concurrency).
    concurrency: int | None = None
    max_concurrency: int = 256
    device: str = "auto"
    dtype: str = "auto"
    chat_template: str | None = None  # path to a Jinja chat template overriding the model's own
    system_prompt_policy: str = "fail"  # "fail" | "merge": what to do if the template rejects system
    overlength_policy: str = "error"  # "error" | "skip": prompts longer than the context
    request_timeout_s: float = 120.0
    max_retry_time_s: float = 600.0
    max_attempts: int = 6
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """A loaded model that answers chat requests."""

    @property
    def identity(self) -> str:
        """A string that changes whenever the model's answers could change (used in cache keys)."""

    def describe(self) -> dict[str, Any]:
        """Facts for the run manifest: name, path, fingerprint, chat template hash... no secrets."""

    def generate(self, requests: Sequence[ChatRequest], on_result: ResultCallback) -> None:
        """Answer every request, calling `on_result(index, completion)` once for each.

        A failure of one request is reported as `Completion.failure(reason)` through the
        callback, not raised; raising is for failures of the whole backend.
        """

    def close(self) -> None:
        """Release the model (GPU memory, worker processes, HTTP clients)."""
