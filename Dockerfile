# syntax=docker/dockerfile:1
# One image for every component; the command picks it:
#   docker run IMAGE matcher | tuner | gateway --listen 0.0.0.0:11435 --upstream http://ollama:11434
#   docker run IMAGE migrate | health HOST:PORT [--service NAME] | up   (default: up, all-in-one)
# The health check is built in (`ollama-optimizer health`, grpc_health_probe exit codes): no probe
# binary is downloaded.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/ollama-optimizer
WORKDIR /src
# Dependencies first (a layer that survives code changes), then the code.
COPY pyproject.toml README.md ./
COPY ollama_optimizer ./ollama_optimizer
COPY matcher_service ./matcher_service
COPY tuner_service ./tuner_service
COPY proxy_plugin ./proxy_plugin
COPY prompt_fingerprint ./prompt_fingerprint
RUN /opt/ollama-optimizer/bin/pip install --upgrade pip \
 && /opt/ollama-optimizer/bin/pip install . \
 && /opt/ollama-optimizer/bin/ollama-optimizer --help >/dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ollama-optimizer" \
      org.opencontainers.image.description="Learns num_ctx/num_batch for Ollama prompt templates: matcher, tuner, gateway" \
      org.opencontainers.image.source="https://github.com/ollama-optimizer/ollama-optimizer"
# A fixed numeric non-root user, so Kubernetes' runAsNonRoot can verify it without a name lookup.
RUN groupadd --system --gid 10001 optimizer \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/ollama-optimizer \
        --no-create-home --shell /usr/sbin/nologin optimizer \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/ollama-optimizer
COPY --from=build /opt/ollama-optimizer /opt/ollama-optimizer
ENV PATH=/opt/ollama-optimizer/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPTIMIZER_DATA_DIR=/var/lib/ollama-optimizer/pg \
    MATCHER_LISTEN=0.0.0.0:50061 \
    TUNER_LISTEN=0.0.0.0:50062 \
    GATEWAY_LISTEN=0.0.0.0:11435 \
    NUMBA_CACHE_DIR=/tmp/numba-cache
# NUMBA_CACHE_DIR: the fingerprint kernels a process compiles at start (a few seconds) are cached there, in
# /tmp, writable with a read-only root: a pod's emptyDir keeps them across container restarts; mount a volume
# there to keep them across containers. OPTIMIZER_FINGERPRINT_KERNEL=numpy skips compiling (and numba's RSS).
# gRPC: matcher 50061, tuner 50062; gateway HTTP 11435; metrics 9461-9463.
EXPOSE 50061 50062 11435 9461 9462 9463
VOLUME ["/var/lib/ollama-optimizer"]
USER 10001:10001
WORKDIR /var/lib/ollama-optimizer
STOPSIGNAL SIGTERM
ENTRYPOINT ["ollama-optimizer"]
CMD ["up"]
