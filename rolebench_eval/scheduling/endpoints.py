"""What the lanes of one run share about an endpoint (URL): its concurrency controller and the
requests in flight there (scheduling/api_lane.py uses it; one EndpointPool per run)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rolebench_eval.scheduling.concurrency import ConcurrencyController


class EndpointState:
    """What every lane sending to one endpoint (base URL) shares: its concurrency controller and
    the requests in flight there. The model under test and a judge served by the same server (or
    under the same rate limit) are two lanes; each adapting on its own they fought over one
    limit (bench/README.md: 71% of the allowed rate, 401 429s). Sharing one controller, a 429 or
    a Retry-After pause of either lane holds both, and a slot freed by one wakes the other."""

    def __init__(self, controller: ConcurrencyController):
        self.controller = controller
        self.in_flight = 0
        self.peak_in_flight = 0
        self.peak_limit = controller.limit
        self.lanes: list[Any] = []  # the ApiLanes sending here


class EndpointPool:
    """The endpoints of one run, by name (URL, credentials redacted): lanes built with the same
    pool share the state of an endpoint they both use. A lane built without one has its own."""

    def __init__(self) -> None:
        self._states: dict[str, EndpointState] = {}

    def state(self, name: str, make: Callable[[], ConcurrencyController]) -> EndpointState:
        found = self._states.get(name)
        if found is None:
            found = self._states[name] = EndpointState(make())
        return found
