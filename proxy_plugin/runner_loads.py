"""Which requests made Ollama load a runner, judged from what this gateway sent to it.

Ollama's load_duration also counts the time a request waits behind earlier requests of the same model,
so a long load_duration alone is no reload. The gateway sees its requests in the order it sends them.
A request with a long load_duration loaded a runner when the runner could not have been ready for it:
its options differ from the previous request of the model (Ollama restarts the runner on any change of
num_ctx or num_batch), no request of the model was in flight (nothing to wait behind: a first load, an
expiry or an eviction), or another model was loaded since the previous request of this model (which
may have evicted it). Otherwise the long load_duration was a queue wait.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from ollama_optimizer.gen.optimizer.v1 import tuner_pb2

MAX_MODELS = 256


@dataclass(frozen=True)
class Sent:
    """What the gateway knew when it sent one request."""

    changed: bool        # options differ from the previous request of the model (or none was seen)
    idle: bool           # no request of the model was in flight
    others_loaded: bool  # another model was loaded since the previous request of this model
    announced: bool      # the options changed from a known previous request: counted as a load when sent


class RunnerLoads:
    """Per model: options last sent, requests in flight, and the loads of other models since."""

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        self._max = max_models
        self._options: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._loads_at: dict[str, int] = {}  # the load counter when the model's previous request was sent
        self._inflight: Counter[str] = Counter()
        self._loads = 0  # loads of any model, as far as the gateway can tell

    def sent(self, model: str, options: tuple[int, int]) -> Sent:
        previous = self._options.pop(model, None)
        ticket = Sent(changed=previous != options, idle=self._inflight[model] == 0,
                      others_loaded=self._loads > self._loads_at.get(model, self._loads),
                      announced=previous is not None and previous != options)
        if ticket.announced:
            self._loads += 1  # Ollama restarts the runner for these options
        self._options[model] = options
        self._loads_at[model] = self._loads
        self._inflight[model] += 1
        while len(self._options) > self._max:
            gone, _ = self._options.popitem(last=False)
            self._loads_at.pop(gone, None)
        return ticket

    def finished(self, model: str) -> None:
        """The request has ended (answered, failed or cancelled)."""
        self._inflight[model] -= 1
        if self._inflight[model] <= 0:
            del self._inflight[model]

    def judge(self, model: str, ticket: Sent, load_ns: int, threshold_ns: int) -> int:
        """RUNNER_LOADED or RUNNER_KEPT for an answered request."""
        if load_ns < threshold_ns or not (ticket.changed or ticket.idle or ticket.others_loaded):
            return tuner_pb2.RUNNER_KEPT
        if not ticket.announced:
            self._loads += 1  # a load the options did not announce: other models may have been evicted
            self._loads_at[model] = self._loads
        return tuner_pb2.RUNNER_LOADED
