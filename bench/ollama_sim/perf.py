"""Memory placement and speed model (formulas; the constants live in profiles.py / CONSTANTS.md).

Memory: weights + KV (per §2, x parallel slots) + compute buffer (grows with num_batch). Layers that do
not fit in free VRAM stay on the CPU with their KV share.
Time per micro-batch of b tokens = bytes of weights read / bandwidth + b x FLOPs / throughput, summed
over the GPU and CPU parts (no overlap). Effective bandwidth and FLOP rate are solved from two measured
anchors (decode t/s, and prompt t/s at ubatch 512) of a reference model. For b >= 32 llama.cpp copies
CPU-resident weights to the GPU (PCIe) and computes there, so large batches amortise the copy - the
reason num_batch matters under spill. Decode (b = 1) reads CPU-resident weights from host RAM.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from .profiles import LLAMA8B_Q4_0_BYTES, LLAMA8B_Q4_0_PARAMS, MODELS, HardwareProfile, MiB, ModelProfile

OFFLOAD_MIN_BATCH = 32  # llama.cpp: ops with CPU weights go to the GPU from this batch size on
SURCHARGE_POINTS = ((512, 0), (1024, 768 * MiB), (2048, 2048 * MiB))  # Ollama generationBatchSurcharge
BASE_BUFFER_PER_TOKEN = 1.5 * MiB  # buffer bytes per ubatch token for a hidden size of 4096


@dataclass(frozen=True)
class Placement:
    """Where one runner's bytes live."""

    gpu_layers: int
    layers: int
    weights_gpu: int
    weights_cpu: int
    kv_gpu: int
    kv_cpu: int
    buffer: int
    on_gpu_host: bool

    @property
    def gpu_fraction(self) -> float:
        return self.gpu_layers / self.layers

    @property
    def vram_bytes(self) -> int:
        return self.weights_gpu + self.kv_gpu + (self.buffer if self.on_gpu_host else 0)

    @property
    def total_bytes(self) -> int:
        return self.weights_gpu + self.weights_cpu + self.kv_gpu + self.kv_cpu + self.buffer

    @property
    def kv_bytes(self) -> int:
        return self.kv_gpu + self.kv_cpu


def compute_buffer(model: ModelProfile, num_batch: int) -> int:
    """Compute buffer for a ubatch of num_batch tokens, scaled from Ollama's 8B-class surcharge."""
    per_token = BASE_BUFFER_PER_TOKEN * model.hidden / 4096
    return int(per_token * num_batch)


def batch_surcharge(num_batch: int) -> int:
    """Ollama's headroom surcharge over the 512 baseline (piecewise linear, extrapolated)."""
    pts = SURCHARGE_POINTS
    if num_batch <= pts[0][0]:
        return 0
    for (b0, s0), (b1, s1) in itertools.pairwise(pts):
        if num_batch <= b1:
            return int(s0 + (s1 - s0) * (num_batch - b0) / (b1 - b0))
    (b0, s0), (b1, s1) = pts[-2], pts[-1]
    return int(s1 + (s1 - s0) * (num_batch - b1) / (b1 - b0))


def place(
    model: ModelProfile, hw: HardwareProfile, kv_ctx: int, num_batch: int, num_gpu: int, free_vram: int
) -> Placement:
    """Split layers between GPU and CPU as Ollama's layer fitting would."""
    kv = model.kv_bytes(kv_ctx)
    buf = compute_buffer(model, num_batch)
    per_layer = (model.weights_bytes + kv) / model.layers
    if hw.vram_bytes == 0:
        n = 0
    else:
        room = free_vram - hw.gpu_overhead_bytes - buf
        n = max(0, min(model.layers, math.floor(room / per_layer)))
        if num_gpu >= 0:
            n = min(n, num_gpu)
    f = n / model.layers
    return Placement(
        n,
        model.layers,
        int(model.weights_bytes * f),
        model.weights_bytes - int(model.weights_bytes * f),
        int(kv * f),
        kv - int(kv * f),
        buf,
        hw.vram_bytes > 0,
    )


@dataclass(frozen=True)
class Rates:
    """Effective device rates solved from a hardware profile's anchors."""

    bytes_s: float
    flops: float


def device_rates(hw: HardwareProfile) -> Rates:
    """Solve 1/tg = W/bw + f/F and 512/pp = W/bw + 512 f/F for bw and F."""
    if hw.anchor_model in MODELS:
        ref = MODELS[hw.anchor_model]
        w, f = ref.weights_bytes, ref.flops_per_token
    else:
        w, f = LLAMA8B_Q4_0_BYTES, 2.0 * LLAMA8B_Q4_0_PARAMS
    flops = 511 * f / (512 / hw.anchor_pp512 - 1 / hw.anchor_tg)
    bytes_s = w / (1 / hw.anchor_tg - f / flops)
    return Rates(bytes_s, flops)


def _attention_flops(model: ModelProfile, position: float) -> float:
    """QK^T and AV FLOPs for one token attending to `position` earlier tokens."""
    return 4.0 * model.layers * model.heads * model.head_dim * position


def ubatch_seconds(model: ModelProfile, hw: HardwareProfile, pl: Placement, b: int, position: float) -> float:
    """Time for one forward pass over b tokens whose mean position is `position`."""
    dev = device_rates(hw)
    flops = b * (model.flops_per_token + _attention_flops(model, position))
    kv_read = model.kv_bytes(int(position)) if b == 1 else 0
    if not pl.on_gpu_host:
        return (model.weights_bytes + kv_read) / dev.bytes_s + flops / dev.flops
    f = pl.gpu_fraction
    t = (pl.weights_gpu + kv_read * f) / dev.bytes_s + flops * f / dev.flops
    if f < 1.0:
        if b >= OFFLOAD_MIN_BATCH:
            t += pl.weights_cpu / hw.pcie_bytes_s + flops * (1 - f) / dev.flops
        else:
            t += (pl.weights_cpu + kv_read * (1 - f)) / hw.host_mem_bytes_s + flops * (1 - f) / hw.host_flops
    return t


def prompt_seconds(
    model: ModelProfile, hw: HardwareProfile, pl: Placement, start: int, n_tokens: int, num_batch: int
) -> float:
    """Prompt processing of n_tokens new tokens after `start` cached ones, in ubatches of num_batch."""
    total, done = 0.0, 0
    while done < n_tokens:
        b = min(num_batch, n_tokens - done)
        total += ubatch_seconds(model, hw, pl, b, start + done + b / 2)
        done += b
    return total


def decode_seconds(model: ModelProfile, hw: HardwareProfile, pl: Placement, start: int, n_tokens: int) -> list[float]:
    """Per-token decode times for n_tokens generated after `start` context tokens."""
    first = ubatch_seconds(model, hw, pl, 1, start)
    last = ubatch_seconds(model, hw, pl, 1, start + n_tokens)
    if n_tokens <= 1:
        return [first] * n_tokens
    step = (last - first) / (n_tokens - 1)
    return [first + i * step for i in range(n_tokens)]


def load_seconds(model: ModelProfile, hw: HardwareProfile, pl: Placement) -> float:
    """Runner start: base + weights at the load rate + KV allocation (CPU profile only)."""
    t = hw.load_base_s + model.weights_bytes / hw.load_bytes_s
    if hw.alloc_bytes_s:
        t += pl.kv_bytes / hw.alloc_bytes_s
    return t
