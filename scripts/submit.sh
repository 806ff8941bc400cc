#!/usr/bin/env bash
# Submit the pipeline as a Ray job to a running cluster (started with `ray start --head`).
#   scripts/submit.sh [configs/tiny_cpu.yaml] [key.sub=value ...]
# RAY_DASHBOARD (default http://127.0.0.1:8265) picks the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/tiny_cpu.yaml}
shift || true
exec ray job submit --address "${RAY_DASHBOARD:-http://127.0.0.1:8265}" --working-dir . \
  -- actorlearner pipeline --config "$config" "$@"
