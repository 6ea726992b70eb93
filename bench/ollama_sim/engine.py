"""The scheduler: runners, reloads, eviction, slots and the simulated timeline.

All scheduling happens synchronously when a request arrives, on a simulated clock (wall time x
time_scale), so figures are deterministic for a given arrival order. Requests for a model are served
FIFO; a request whose runner options differ waits for in-flight requests, then reloads (Ollama's
pending queue blocks the same way). Loads are serialised across models like Ollama's scheduler.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from . import perf
from .counts import COUNT_MODES
from .embed import input_tokens
from .output import OutputHook, default_output_tokens, output_pieces
from .profiles import HARDWARE, MODELS, GiB, HardwareProfile, ModelProfile
from .prompt import PreparedPrompt, PromptError, prepare
from .tokens import Segment, stable_hash, unit_count

DEFAULT_NUM_BATCH = 512  # api.DefaultOptions NumBatch
DEFAULT_NUM_KEEP = 4  # api.DefaultOptions NumKeep
DEFAULT_KEEP_ALIVE_S = 300.0  # OLLAMA_KEEP_ALIVE default 5m
WARM_OVERHEAD_S = 0.005  # docs/api.md warm load_duration example (5 ms)
MAX_LOADED_PER_GPU = 3  # OLLAMA_MAX_LOADED_MODELS default: 3 x GPUs (3 on CPU)
MIN_NUM_CTX = 4
EMBED_TOO_LONG = "the input length exceeds the context length"  # the runner's errorInputTooLong


@dataclass(frozen=True)
class Sensitivity:
    """Multipliers on the load and prompt-processing rates, for sensitivity runs of the benchmarks.

    1.0 is the cited constant (bench/CONSTANTS.md); 2.0 loads twice as fast (e.g. weights in the page cache).
    """

    load_rate: float = 1.0
    prompt_rate: float = 1.0


class ModelNotFound(Exception):
    """The model is not in the emulator's catalogue (Ollama: 404)."""


class OutOfMemory(Exception):
    """The model does not fit in system memory (Ollama: 500)."""


@dataclass(frozen=True)
class RunnerOptions:
    """api.Runner as compared by needsReload, plus the context-shift launch flag."""

    num_ctx: int
    num_batch: int
    num_gpu: int = -1
    main_gpu: int | None = None
    use_mmap: bool | None = None
    num_thread: int = 0
    shift: bool = True
    num_ctx_auto: bool = False
    num_batch_auto: bool = False

    def compared(self) -> tuple:
        return (self.num_ctx, self.num_batch, self.num_gpu, self.main_gpu, self.use_mmap, self.num_thread)


@dataclass
class Runner:
    """One loaded model."""

    model: ModelProfile
    opts: RunnerOptions
    placement: perf.Placement
    load_start: float
    ready_at: float
    slots: list[float]
    caches: list[list[Segment]]
    last_used: float
    expires_at: float
    gone_at: float | None = None  # sim time of unload (eviction, expiry, reload)


@dataclass
class RequestRecord:
    """What happened to one request (all durations in simulated seconds)."""

    id: int
    endpoint: str
    model: str
    arrival_s: float
    status: int = 200
    error: str = ""
    options: dict = field(default_factory=dict)
    runner: dict = field(default_factory=dict)
    prompt_units: int = 0
    prompt_tokens_sent: int = 0
    prompt_eval_count: int = 0
    messages_dropped: int = 0
    truncated: bool = False
    cached_tokens: int = 0
    eval_count: int = 0
    done_reason: str = ""
    loaded: bool = False
    reloaded: bool = False
    gpu_layers: int = 0
    load_s: float = 0.0
    prompt_eval_s: float = 0.0
    eval_s: float = 0.0
    ttft_s: float = 0.0
    total_s: float = 0.0


@dataclass
class Plan:
    """A scheduled request: record plus the timeline the HTTP layer replays."""

    record: RequestRecord
    start: float = 0.0  # runner acquired
    first_token: float = 0.0
    token_times: list[float] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    end: float = 0.0


def vram_tier_num_ctx(hw: HardwareProfile) -> int:
    """Ollama >= 0.15.5 default context by total VRAM."""
    if hw.vram_bytes >= 47 * GiB:
        return 262144
    if hw.vram_bytes >= 23 * GiB:
        return 32768
    return 4096


def auto_num_batch(num_ctx: int) -> int:
    """Ollama >= 0.30 automatic generation batch by context (before headroom step-down)."""
    return 2048 if num_ctx > 32768 else 1024 if num_ctx > 4096 else 512


def parse_keep_alive(value: Any) -> float | None:
    """Seconds from Ollama's keep_alive (number of seconds or Go duration like '5m'); None = default."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    units = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "h", "m", "s"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


class Engine:
    """Ollama's scheduler and runners on a simulated clock."""

    def __init__(
        self,
        hardware: str,
        models: list[str],
        default_num_ctx: int | None,
        num_parallel: int,
        time_scale: float,
        seed: int,
        output_tokens: OutputHook | None,
        max_loaded_models: int | None,
        keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
        sensitivity: Sensitivity = Sensitivity(),
        count_mode: str = "full",
    ) -> None:
        if hardware not in HARDWARE:
            raise ValueError(f"unknown hardware {hardware!r}; choose from {sorted(HARDWARE)}")
        if count_mode not in COUNT_MODES:
            raise ValueError(f"unknown count mode {count_mode!r}; choose from {sorted(COUNT_MODES)}")
        self.count_mode = count_mode  # how prompt_eval_count is reported (counts.py)
        self.hw = HARDWARE[hardware]
        self.models = {name: MODELS[name] for name in models}
        self.default_num_ctx = default_num_ctx or vram_tier_num_ctx(self.hw)
        self.num_parallel = max(1, num_parallel)
        self.time_scale = time_scale
        self.seed = seed
        self.output_tokens = output_tokens or default_output_tokens(seed)
        self.max_loaded = max_loaded_models or MAX_LOADED_PER_GPU
        self.keep_alive_s = keep_alive_s
        self.sensitivity = sensitivity
        self.t0 = time.monotonic()
        self.epoch = time.time()  # Unix seconds at simulated time 0 (responses' created_at)
        self.runners: dict[str, Runner] = {}
        self.retired: list[Runner] = []
        self.load_barrier = 0.0
        self.requests: list[RequestRecord] = []
        self.loads: Counter[str] = Counter()
        self.reloads: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()
        self.expirations: Counter[str] = Counter()
        self.truncated: Counter[str] = Counter()

    # ---- clock -------------------------------------------------------------------------------
    def now(self) -> float:
        """Simulated seconds since start."""
        return (time.monotonic() - self.t0) * self.time_scale

    def wall_delay(self, sim_t: float) -> float:
        """Wall seconds until simulated time sim_t."""
        return self.t0 + sim_t / self.time_scale - time.monotonic()

    # ---- options -----------------------------------------------------------------------------
    def resolve(self, model: ModelProfile, options: dict, shift: bool | None) -> RunnerOptions:
        """Request options -> runner options (explicit num_ctx clamped to the training context)."""
        ctx_auto = options.get("num_ctx") is None
        num_ctx = self.default_num_ctx if ctx_auto else int(options["num_ctx"])
        num_ctx = max(MIN_NUM_CTX, min(num_ctx, model.train_ctx))
        batch_auto = options.get("num_batch") is None
        return RunnerOptions(
            num_ctx=num_ctx,
            num_batch=DEFAULT_NUM_BATCH if batch_auto else max(1, int(options["num_batch"])),
            num_gpu=int(options.get("num_gpu", -1)),
            main_gpu=options.get("main_gpu"),
            use_mmap=options.get("use_mmap"),
            num_thread=int(options.get("num_thread", 0)),
            shift=True if shift is None else bool(shift),
            num_ctx_auto=ctx_auto,
            num_batch_auto=batch_auto,
        )

    @staticmethod
    def needs_reload(loaded: RunnerOptions, req: RunnerOptions) -> bool:
        """server/sched.go needsReload: would a runner loaded with `loaded` be restarted for `req`?"""
        old, new = loaded, req
        if old.num_ctx_auto and new.num_ctx_auto:
            new = replace(new, num_ctx=old.num_ctx)
        if old.num_batch_auto and new.num_batch_auto:
            new = replace(new, num_batch=old.num_batch)
        if new.num_gpu < 0:
            old, new = replace(old, num_gpu=-1), replace(new, num_gpu=-1)
        return old.shift != new.shift or old.compared() != new.compared()

    # ---- memory ------------------------------------------------------------------------------
    def _live(self, exclude: str) -> list[Runner]:
        return [r for name, r in self.runners.items() if name != exclude]

    def _make_runner(self, model: ModelProfile, req: RunnerOptions, after: float) -> Runner:
        """Evict what must go, place the model, and schedule its load no earlier than `after`."""
        kv_ctx = req.num_ctx * self.num_parallel
        while True:
            others = self._live(model.name)
            free_vram = self.hw.vram_bytes - sum(r.placement.vram_bytes for r in others)
            free_ram = self.hw.ram_bytes - sum(r.placement.total_bytes - r.placement.vram_bytes for r in others)
            batch = req.num_batch
            if req.num_batch_auto:
                batch = auto_num_batch(req.num_ctx)
                full = model.weights_bytes + model.kv_bytes(kv_ctx) + self.hw.gpu_overhead_bytes
                while (
                    self.hw.vram_bytes and batch > DEFAULT_NUM_BATCH and full + perf.batch_surcharge(batch) > free_vram
                ):
                    batch //= 2
            pl = perf.place(model, self.hw, kv_ctx, batch, req.num_gpu, free_vram)
            fits = pl.gpu_layers == model.layers if self.hw.vram_bytes else pl.total_bytes <= free_ram
            if others and (not fits or len(others) >= self.max_loaded):
                victim = min(others, key=lambda r: r.last_used)
                after = max(after, self._retire(victim.model.name, after))
                self.evictions[victim.model.name] += 1
                continue
            if pl.total_bytes - pl.vram_bytes > free_ram:
                need = (pl.total_bytes - pl.vram_bytes) / GiB
                raise OutOfMemory(
                    f"model requires more system memory ({need:.1f} GiB) than is available ({free_ram / GiB:.1f} GiB)"
                )
            break
        opts = replace(req, num_batch=batch)
        start = max(after, self.load_barrier)
        ready = start + perf.load_seconds(model, self.hw, pl) / self.sensitivity.load_rate
        self.load_barrier = ready
        self.loads[model.name] += 1
        return Runner(
            model,
            opts,
            pl,
            start,
            ready,
            [ready] * self.num_parallel,
            [[] for _ in range(self.num_parallel)],
            ready,
            math.inf,
        )

    def _retire(self, name: str, earliest: float) -> float:
        """Unload a runner once its in-flight requests finish; returns the unload time."""
        runner = self.runners.pop(name)
        runner.gone_at = max([earliest, runner.ready_at, *runner.slots])
        self.retired.append(runner)
        return runner.gone_at

    def _expire(self, now: float) -> None:
        for name, runner in list(self.runners.items()):
            if runner.expires_at <= now:
                self._retire(name, runner.expires_at)
                self.expirations[name] += 1

    # ---- scheduling --------------------------------------------------------------------------
    def schedule(
        self,
        endpoint: str,
        model_name: str,
        messages: list[dict],
        options: dict,
        truncate: bool | None,
        shift: bool | None,
        keep_alive: Any,
    ) -> Plan:
        """Decide everything about one request at its arrival; raises ModelNotFound / OutOfMemory."""
        units = unit_count("".join(f"{m.get('role')}: {m.get('content') or ''}\n" for m in messages))
        model, runner, plan, slot, ka = self._acquire(endpoint, model_name, options, shift, keep_alive, units)
        record = plan.record
        if not messages:  # empty request: load (or unload) only
            record.done_reason = "unload" if ka == 0 else "load"
            plan.end = plan.first_token = plan.start
            self._finish(runner, slot, plan, ka, runner.caches[slot])
            return plan
        try:
            prompt = prepare(
                messages,
                model,
                runner.opts.num_ctx,
                int(options.get("num_keep", DEFAULT_NUM_KEEP)),
                truncate is not False,
                runner.opts.shift,
            )
        except PromptError as exc:
            record.status, record.error = 400, str(exc)
            plan.end = plan.start
            self._touch(runner, plan.end, ka)
            return plan
        self._run(model, runner, slot, prompt, messages, options, plan, ka)
        return plan

    def embed(self, model_name: str, inputs: list[str], options: dict, truncate: bool | None, keep_alive: Any) -> Plan:
        """/api/embed: each input is cut to the runner's context (or refused with ``truncate: false``)."""
        model, runner, plan, slot, ka = self._acquire(
            "embed", model_name, options, None, keep_alive, unit_count("\n".join(inputs))
        )
        record, limit = plan.record, runner.opts.num_ctx
        counts = [input_tokens(model, text) for text in inputs]
        if truncate is False and any(n > limit for n in counts):
            record.status, record.error = 400, EMBED_TOO_LONG
            plan.end = plan.start
            self._touch(runner, plan.end, ka)
            return plan
        record.truncated = any(n > limit for n in counts)
        if record.truncated:
            self.truncated[model_name] += 1
        record.prompt_tokens_sent = sum(counts)
        record.prompt_eval_count = sum(min(n, limit) for n in counts)
        record.prompt_eval_s = sum(
            perf.prompt_seconds(model, self.hw, runner.placement, 0, min(n, limit), runner.opts.num_batch)
            for n in counts
        )
        plan.end = plan.first_token = plan.start + record.prompt_eval_s
        record.total_s = plan.end - record.arrival_s
        self._finish(runner, slot, plan, ka, [])
        return plan

    def _acquire(
        self, endpoint: str, model_name: str, options: dict, shift: bool | None, keep_alive: Any, prompt_units: int
    ) -> tuple[ModelProfile, Runner, Plan, int, float]:
        """The model's runner for a request arriving now (loaded or reloaded as Ollama's scheduler would),
        the request's plan and record, its slot and its keep-alive seconds."""
        now = self.now()
        if model_name not in self.models:
            raise ModelNotFound(f"model '{model_name}' not found")
        model = self.models[model_name]
        record = RequestRecord(len(self.requests), endpoint, model_name, now, options=dict(options))
        record.prompt_units = prompt_units
        self._expire(now)
        req = self.resolve(model, options, shift)
        runner = self.runners.get(model_name)
        if runner is None or self.needs_reload(runner.opts, req):
            if runner is not None:
                self.reloads[model_name] += 1
                record.reloaded = True
            after = self._retire(model_name, now) if runner is not None else now
            runner = self.runners[model_name] = self._make_runner(model, req, after)
            record.loaded = True
        plan = Plan(record)
        record.runner = {**asdict(runner.opts), "gpu_layers": runner.placement.gpu_layers}
        record.gpu_layers = runner.placement.gpu_layers
        self.requests.append(record)
        slot = min(range(len(runner.slots)), key=lambda i: runner.slots[i])
        plan.start = max(now, runner.slots[slot]) + WARM_OVERHEAD_S
        record.load_s = plan.start - now
        ka = parse_keep_alive(keep_alive)
        return model, runner, plan, slot, self.keep_alive_s if ka is None else ka

    def _run(
        self,
        model: ModelProfile,
        runner: Runner,
        slot: int,
        prompt: PreparedPrompt,
        messages: list[dict],
        options: dict,
        plan: Plan,
        keep_alive: float,
    ) -> None:
        rec = plan.record
        rec.prompt_tokens_sent, rec.prompt_eval_count = prompt.sent_tokens, prompt.tokens
        rec.messages_dropped, rec.truncated = prompt.messages_dropped, prompt.truncated
        if prompt.truncated:
            self.truncated[model.name] += 1
        cached = 0 if prompt.cut_head else self._cached(runner.caches[slot], prompt.segments, model)
        rec.cached_tokens = cached
        rec.prompt_eval_s = (
            perf.prompt_seconds(
                model, self.hw, runner.placement, cached, max(1, prompt.tokens - cached), runner.opts.num_batch
            )
            / self.sensitivity.prompt_rate
        )
        n, reason = self._output_length(model, runner.opts, prompt.tokens, messages, options)
        rec.eval_count, rec.done_reason = n, reason
        steps = perf.decode_seconds(model, self.hw, runner.placement, prompt.tokens, n)
        rec.eval_s = sum(steps)
        t = plan.start + rec.prompt_eval_s
        plan.first_token = t
        for dt in steps:
            t += dt
            plan.token_times.append(t)
        plan.end = t
        plan.pieces = output_pieces(self.seed, model.name, messages, n)
        rec.ttft_s = (plan.token_times[0] if steps else plan.first_token) - rec.arrival_s
        rec.total_s = plan.end - rec.arrival_s
        answer = Segment("assistant", stable_hash("assistant", "".join(plan.pieces)), n + model.msg_overhead)
        cache = [] if prompt.cut_head else [*prompt.segments, answer]
        self._finish(runner, slot, plan, keep_alive, cache)

    def _output_length(
        self, model: ModelProfile, opts: RunnerOptions, prompt_tokens: int, messages: list[dict], options: dict
    ) -> tuple[int, str]:
        """Natural length, capped by num_predict, and by the context when context shift is off."""
        n, reason = max(1, int(self.output_tokens(model.name, messages))), "stop"
        num_predict = options.get("num_predict")
        if num_predict is not None and int(num_predict) > 0 and n >= int(num_predict):
            n, reason = int(num_predict), "length"
        room = opts.num_ctx - prompt_tokens
        if not opts.shift and n >= room:
            n, reason = max(room, 0), "length"
        return n, reason

    @staticmethod
    def _cached(cache: list[Segment], segments: list[Segment], model: ModelProfile) -> int:
        """Tokens of the longest common segment prefix with the slot's previous prompt + answer."""
        if not cache:
            return 0
        total = model.bos_tokens
        for old, new in zip(cache, segments):
            if old.key != new.key:
                break
            total += new.tokens
        return total

    def _finish(self, runner: Runner, slot: int, plan: Plan, keep_alive: float, cache: list[Segment]) -> None:
        runner.slots[slot] = plan.end
        runner.caches[slot] = cache
        self._touch(runner, plan.end, keep_alive)

    @staticmethod
    def _touch(runner: Runner, end: float, keep_alive: float) -> None:
        """Mark use until `end`; the runner expires keep_alive after its last request (never if < 0)."""
        runner.last_used = max(runner.last_used, end)
        runner.expires_at = max(max(runner.slots), end + keep_alive) if keep_alive >= 0 else math.inf

    # ---- figures -----------------------------------------------------------------------------
    def runner_options(self, model: str) -> dict | None:
        """Options of the runner that currently serves `model` (None when not loaded)."""
        runner = self.runners.get(model)
        if runner is None:
            return None
        return {
            **asdict(runner.opts),
            "gpu_layers": runner.placement.gpu_layers,
            "kv_bytes": runner.placement.kv_bytes,
            "vram_bytes": runner.placement.vram_bytes,
        }

    def kv_bytes(self, model: str | None = None) -> int:
        """KV bytes allocated now (for one model or all)."""
        return sum(r.placement.kv_bytes for name, r in self.runners.items() if model in (None, name))

    def memory_timeline(self, until: float | None = None) -> list[tuple[float, int, int]]:
        """(sim time, KV bytes, VRAM bytes) after each load/unload event."""
        events: list[tuple[float, int, int]] = []
        for r in [*self.retired, *self.runners.values()]:
            events.append((r.load_start, r.placement.kv_bytes, r.placement.vram_bytes))
            if r.gone_at is not None:
                events.append((r.gone_at, -r.placement.kv_bytes, -r.placement.vram_bytes))
        events.sort(key=lambda e: (e[0], e[1]))
        kv = vram = 0
        out = []
        for t, dkv, dvram in events:
            if until is not None and t > until:
                break
            kv, vram = kv + dkv, vram + dvram
            out.append((t, kv, vram))
        return out

    def memory_stats(self, until: float | None = None) -> dict[str, float]:
        """Time-weighted mean and peak of KV and VRAM bytes from the first load to `until` (default now)."""
        until = self.now() if until is None else until
        line = self.memory_timeline(until)
        if not line:
            return {"kv_mean_bytes": 0.0, "kv_peak_bytes": 0, "vram_mean_bytes": 0.0, "vram_peak_bytes": 0}
        end = max(until, line[-1][0])
        span = end - line[0][0]
        kv_area = vram_area = 0.0
        for (t, kv, vram), nxt in zip(line, [*line[1:], (end, 0, 0)]):
            kv_area += kv * (nxt[0] - t)
            vram_area += vram * (nxt[0] - t)
        return {
            "kv_mean_bytes": kv_area / span if span > 0 else float(line[-1][1]),
            "kv_peak_bytes": max(p[1] for p in line),
            "vram_mean_bytes": vram_area / span if span > 0 else float(line[-1][2]),
            "vram_peak_bytes": max(p[2] for p in line),
        }
