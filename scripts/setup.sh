#!/usr/bin/env bash
# Install everything actorlearner needs on a fresh Debian/Ubuntu machine (CPU).
# CPU torch first, so nothing pulls a multi-GB CUDA build; firejail from apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v firejail >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq firejail >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq firejail >/dev/null
  fi
fi

PIP="python3 -m pip"
$PIP install -q --disable-pip-version-check "torch==2.13.0"
$PIP install -q --disable-pip-version-check -e ".[dev]"
echo "actorlearner installed: $(python3 -c 'import actorlearner, sandbox, envs; print("ok")')"
