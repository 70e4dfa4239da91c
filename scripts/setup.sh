#!/usr/bin/env bash
# Install what is missing, idempotently: the venv with the locked Python deps, and (when no server
# answers) RabbitMQ and PostgreSQL from Debian packages, started and waited for.
# Used by `make run`, `make test` and .ci/run. Needs root (or sudo) only when it installs packages.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
apt_install() {
  say "installing Debian packages: $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Python -------------------------------------------------------------------------------
if ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
  echo "Python 3.11 is required (found: $("$PY" --version 2>&1 || echo none))" >&2
  exit 1
fi
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv; fi
stamp="$VENV/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  say "creating $VENV and installing the locked dependencies"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -m pip install -q -r requirements.lock 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -m pip install -q --no-deps -e . 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -W ignore -c 'import nameko, eventlet, psycopg2, pika, pydantic, structlog, hl7apy' 
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi

# --- RabbitMQ -----------------------------------------------------------------------------
if ! port_open 5672; then
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
  say "starting RabbitMQ"
  $SUDO rabbitmq-server -detached || true
  for _ in $(seq 1 120); do port_open 5672 && break; sleep 1; done
  port_open 5672 || { echo "RabbitMQ did not come up on 5672" >&2; exit 1; }
fi

# --- PostgreSQL ---------------------------------------------------------------------------
if ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  say "starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start || true
  for _ in $(seq 1 60); do port_open 5432 && break; sleep 1; done
  port_open 5432 || { echo "PostgreSQL did not come up on 5432" >&2; exit 1; }
fi
# A fresh Debian cluster asks for a password over TCP; this development setup trusts loopback.
if ! "$VENV/bin/python" -c 'import psycopg2; psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres").close()' 2>/dev/null; then
  ver="$(ls /etc/postgresql | sort -V | tail -1)"
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  say "allowing trusted loopback connections in $hba (development machine)"
  $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main reload
  sleep 1
  "$VENV/bin/python" -c 'import psycopg2; psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres").close()'
fi
# --- test and bench tools: `make run` needs none of them ------------------------------------------
# --test-tools (make test): the SMPP test server, the compose client, the browser.
# --bench-tools (make bench): the SMPP test server only (bench/sms.py runs against it).
mode="${1:-}"
if [ "$mode" != "--test-tools" ] && [ "$mode" != "--bench-tools" ]; then
  say "ready: Python deps in $VENV, RabbitMQ on 5672, PostgreSQL on 5432"
  exit 0
fi
# --- SMPP test server -------------------------------------------------------------------------
# tests/tools/smppd is a small SMSC in Node (npm `smpp`, pinned by its package-lock.json) that the
# SMPP adapter's tests and bench/sms.py run as a real process.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then apt_install nodejs npm; fi
smppd=tests/tools/smppd
smppd_stamp="$smppd/node_modules/.installed-$(cat "$smppd/package.json" "$smppd/package-lock.json" | sha256sum | cut -c1-16)"
if [ ! -f "$smppd_stamp" ]; then
  say "installing the SMPP test server's node modules"
  (cd "$smppd" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  touch "$smppd_stamp"
fi
if [ "$mode" = "--bench-tools" ]; then
  # py-spy samples a bench platform's processes (`--profile DIR` of bench/steady.py and
  # bench/flash_crowd.py, bench/profile.py); a bench tool, pinned, not a dependency of the platform.
  if [ ! -x "$VENV/bin/py-spy" ]; then "$VENV/bin/pip" install --quiet --disable-pip-version-check py-spy==0.4.3; fi
  say "ready: Python deps in $VENV, RabbitMQ on 5672, PostgreSQL on 5432, node for the SMPP test server"
  exit 0
fi
# `docker compose config` checks docker-compose.yml in the tests; no engine is needed for that.
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
  apt_install docker-compose
fi
# --- browser tests ----------------------------------------------------------------------------
# Playwright drives Debian's chromium (its own browser download is not used); a CJK font makes the
# screenshots show Chinese rather than empty boxes.
if [ ! -x /usr/bin/chromium ]; then apt_install chromium fonts-wqy-microhei; fi
if ! fc-list 2>/dev/null | grep -qiE "wenquanyi|noto sans cjk|source han"; then apt_install fonts-wqy-microhei; fi
say "ready: Python deps in $VENV, RabbitMQ on 5672, PostgreSQL on 5432, chromium for the browser tests, node for the SMPP test server"
