"""Model and hardware profiles. Every number is listed with its source in bench/CONSTANTS.md."""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3
MiB = 1024**2


@dataclass(frozen=True)
class ModelProfile:
    """Architecture and file facts of one GGUF model as Ollama would load it."""

    name: str
    family: str
    parameter_size: str
    quantization: str
    params: float  # parameter count
    weights_bytes: int  # GGUF file size
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    train_ctx: int  # n_ctx_train
    chars_per_piece: int  # tokenizer stand-in: letters per BPE piece in long words
    digits_per_piece: int  # tokenizer stand-in: digits per BPE piece
    bos_tokens: int  # BOS added by the tokenizer (tokenizer.ggml.add_bos_token)
    msg_overhead: int  # template tokens per message (markers + role)
    gen_prompt: int  # template tokens opening the assistant turn
    default_system: str  # system prompt the template inserts when none is given ("" = none)

    @property
    def adds_bos(self) -> bool:
        """Whether the tokenizer prepends BOS (Ollama then keeps num_keep + 1 head tokens)."""
        return self.bos_tokens > 0

    def kv_bytes(self, ctx_tokens: int) -> int:
        """f16 KV cache for ctx_tokens: 2 (K+V) x layers x kv_heads x head_dim x ctx x 2 bytes."""
        return 2 * self.layers * self.kv_heads * self.head_dim * ctx_tokens * 2

    @property
    def flops_per_token(self) -> float:
        """Dense forward FLOPs per token (2 x parameters)."""
        return 2.0 * self.params


@dataclass(frozen=True)
class HardwareProfile:
    """Host and accelerator figures; speeds are derived from measured anchors in perf.py."""

    name: str
    vram_bytes: int  # 0 = CPU only
    ram_bytes: int
    gpu_overhead_bytes: int  # CUDA context etc. reserved per GPU
    anchor_pp512: float  # prompt t/s at ubatch 512 of the anchor model
    anchor_tg: float  # decode t/s of the same anchor model
    anchor_model: str  # which MODELS entry / reference model the anchors were measured with
    pcie_bytes_s: float  # host->GPU copy rate for CPU-resident weights during large batches
    host_mem_bytes_s: float  # host RAM rate for CPU-resident layers at decode
    host_flops: float  # host compute for CPU-resident layers at small batches
    load_base_s: float  # fixed cost to start a runner
    load_bytes_s: float  # weights load rate (file -> device)
    alloc_bytes_s: float  # KV/compute buffer allocation rate (0: included in load_bytes_s)


# Reference model of llama.cpp's CUDA benchmarks (llama-bench): llama 8B Q4_0.
LLAMA8B_Q4_0_PARAMS = 8.03e9
LLAMA8B_Q4_0_BYTES = int(4.33 * GiB)

SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

MODELS: dict[str, ModelProfile] = {
    m.name: m
    for m in (
        ModelProfile(
            "smollm2:135m",
            "llama",
            "135M",
            "Q4_1",
            134.5e6,
            98_362_432,
            30,
            9,
            3,
            64,
            576,
            8192,
            6,
            1,
            0,
            5,
            3,
            SMOL_SYSTEM,
        ),
        ModelProfile(
            "llama3.2:3b",
            "llama",
            "3.2B",
            "Q4_K_M",
            3.21e9,
            2_019_393_189,
            28,
            24,
            8,
            128,
            3072,
            131072,
            7,
            3,
            1,
            5,
            4,
            "",
        ),
        ModelProfile(
            "llama3.1:8b",
            "llama",
            "8.0B",
            "Q4_K_M",
            8.03e9,
            4_920_753_328,
            32,
            32,
            8,
            128,
            4096,
            131072,
            7,
            3,
            1,
            5,
            4,
            "",
        ),
        ModelProfile(
            "qwen2.5:14b",
            "qwen2",
            "14.8B",
            "Q4_K_M",
            14.77e9,
            8_988_110_976,
            48,
            40,
            8,
            128,
            5120,
            32768,
            7,
            1,
            0,
            5,
            3,
            QWEN_SYSTEM,
        ),
        ModelProfile(
            "llama3.3:70b",
            "llama",
            "70.6B",
            "Q4_K_M",
            70.55e9,
            42_520_398_432,
            80,
            64,
            8,
            128,
            8192,
            131072,
            7,
            3,
            1,
            5,
            4,
            "",
        ),
    )
}

HARDWARE: dict[str, HardwareProfile] = {
    h.name: h
    for h in (
        HardwareProfile(
            "gpu-8gb", 8 * GiB, 32 * GiB, 512 * MiB, 3807.0, 112.0, "llama3.1:8b", 12.5e9, 50e9, 400e9, 0.0, 1.42e9, 0.0
        ),
        HardwareProfile(
            "gpu-24gb",
            24 * GiB,
            64 * GiB,
            512 * MiB,
            10359.0,
            150.0,
            "llama-8b-q4_0",
            25e9,
            50e9,
            800e9,
            0.0,
            1.42e9,
            0.0,
        ),
        HardwareProfile(
            "gpu-80gb",
            80 * GiB,
            256 * GiB,
            512 * MiB,
            7900.0,
            140.0,
            "llama-8b-q4_0",
            25e9,
            100e9,
            1500e9,
            0.0,
            1.42e9,
            0.0,
        ),
        HardwareProfile("cpu", 0, 24 * GiB, 0, 364.0, 115.0, "smollm2:135m", 0.0, 0.0, 0.0, 0.0, 0.565e9, 1.97e9),
    )
}

DEFAULT_HARDWARE = "gpu-24gb"
