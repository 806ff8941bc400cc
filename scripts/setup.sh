#!/usr/bin/env bash
# Install everything actorlearner needs on a fresh Debian/Ubuntu machine (CPU).
# CPU torch first, so nothing pulls a multi-GB CUDA build: from PyTorch's CPU wheel index
# where it is reachable (a 5 s probe), else from the default index; firejail from apt.
# SETUP_DRY_RUN=1 prints the install commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.13.0
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
PIP="python3 -m pip"
PIP_FLAGS=(-q --disable-pip-version-check)
RUN=()
if [ -n "${SETUP_DRY_RUN:-}" ]; then RUN=(echo); fi

reachable() {  # a short probe, so an offline machine does not wait on pip's retries
  python3 - "$1" <<'PY'
import sys
import urllib.request

try:
    urllib.request.urlopen(sys.argv[1], timeout=5).close()
except Exception:
    sys.exit(1)
PY
}

have_torch() {
  python3 -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" \
    2>/dev/null
}

install_torch() {
  if [ -z "${SETUP_DRY_RUN:-}" ] && have_torch; then return; fi
  if reachable "$TORCH_CPU_INDEX/torch/"; then
    if "${RUN[@]}" $PIP install "${PIP_FLAGS[@]}" --index-url "$TORCH_CPU_INDEX" \
      "torch==$TORCH_VERSION"; then
      return
    fi
    echo "setup: the CPU wheel index failed; installing torch from the default index" >&2
  fi
  "${RUN[@]}" $PIP install "${PIP_FLAGS[@]}" "torch==$TORCH_VERSION"
}

install_system_packages() {  # firejail runs every job; libseccomp builds each job's filter
  local missing=()
  command -v firejail >/dev/null 2>&1 || missing+=(firejail)
  ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing+=(libseccomp2)
  if [ ${#missing[@]} = 0 ]; then return; fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
  "${RUN[@]}" "${sudo[@]}" apt-get update -qq
  "${RUN[@]}" "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

install_system_packages
install_torch
"${RUN[@]}" $PIP install "${PIP_FLAGS[@]}" -e ".[dev]"
if [ -z "${SETUP_DRY_RUN:-}" ]; then
  echo "actorlearner installed: $(python3 -c 'import actorlearner, sandbox, envs; print("ok")')"
fi
