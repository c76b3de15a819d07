#!/usr/bin/env bash
# Idempotent developer/CI set-up: virtualenv, editable install with dev tools, redis-server.
# Quiet on the happy path: one line per step.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.venv
STAMP="$VENV/.janus-installed"

# 1. virtualenv
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    rm -f "$STAMP"
    echo "venv: created $VENV"
else
    echo "venv: $VENV exists"
fi

# 2. package + dev tools (again whenever pyproject.toml changes)
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
    touch "$STAMP"
    echo "deps: installed -e '.[dev]'"
else
    echo "deps: up to date"
fi

# 3. redis-server / redis-cli (real throwaway servers for tests and the demo)
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    echo "redis: $(redis-server --version | cut -d' ' -f1-3)"
elif [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq redis-server >/dev/null
    echo "redis: installed $(redis-server --version | cut -d' ' -f1-3)"
else
    echo 'redis-server is missing: run `sudo apt-get install -y redis-server` (Debian/Ubuntu)' >&2
    exit 1
fi

# 4. chromium + chromedriver (the dashboard's end-to-end tests drive Debian's browser through
#    Selenium; nothing is downloaded at test time)
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null | head -1)"
elif [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq chromium chromium-driver >/dev/null
    echo "chromium: installed $(/usr/bin/chromium --version 2>/dev/null | head -1)"
else
    # (not fatal: everything else runs; the browser tests fail naming this command)
    echo 'chromium is missing (the dashboard browser tests need it): run `sudo apt-get install -y chromium chromium-driver` (Debian/Ubuntu)' >&2
fi
