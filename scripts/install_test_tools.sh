#!/usr/bin/env bash
# Install the Debian tools the deployment tests use (tests/test_deploy_monitoring.py): `prometheus` (a real server
# for the end-to-end scrape test) and `promtool` (config/rule checks and alert unit tests), both from Debian's
# `prometheus` package. Without them those tests skip with a reason; everything else runs anyway.
# Idempotent: does nothing when the tools are already there. Never starts the Prometheus service.
#
# kubectl (for comparing deploy/kustomize.py against `kubectl kustomize`) is used when present but not installed
# here: the built-in renderer covers rendering without it.
set -euo pipefail

if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
    echo "test tools present: $(prometheus --version 2>&1 | head -1)"
    exit 0
fi

SUDO=""
if [[ "$(id -u)" != 0 ]]; then
    if command -v sudo >/dev/null; then SUDO="sudo"; else
        echo "warning: not root and no sudo: cannot install prometheus; its tests will be skipped" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d 101: the package's postinst must not start a Prometheus daemon on this machine
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends prometheus
echo "test tools installed: $(prometheus --version 2>&1 | head -1)"
