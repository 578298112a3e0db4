#!/usr/bin/env bash
# Prometheus, promtool, Alertmanager and amtool from Debian, for the deploy tests.
# Idempotent: does nothing when they are already installed.
set -euo pipefail
if command -v promtool >/dev/null && command -v amtool >/dev/null && command -v prometheus-alertmanager >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus prometheus-alertmanager >/dev/null
