#!/usr/bin/env bash
# Submit the pipeline as a Ray job to a running cluster (started with `ray start --head`).
#   scripts/submit.sh [configs/tiny_cpu.yaml] [key.sub=value ...]
# RAY_API_SERVER_ADDRESS (the dashboard URL `ray start` prints; default
# http://127.0.0.1:8265) picks the cluster. Extra `ray job submit` flags go in
# RAY_SUBMIT_ARGS, e.g. RAY_SUBMIT_ARGS=--no-wait.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-configs/tiny_cpu.yaml}
shift || true
if [[ ! -f $config ]]; then
  echo "submit.sh: no config at $config; pass one such as configs/tiny_cpu.yaml" >&2
  exit 2
fi
# Ray's job client sends the cluster token only in token mode. `ray start` turns token
# mode on when a token exists, so do the same: a cluster without auth ignores the token.
if [[ -z ${RAY_AUTH_MODE:-} && ( -n ${RAY_AUTH_TOKEN:-} || -n ${RAY_AUTH_TOKEN_PATH:-} || -f $HOME/.ray/auth_token ) ]]; then
  export RAY_AUTH_MODE=token
fi
address=${RAY_API_SERVER_ADDRESS:-${RAY_DASHBOARD:-http://127.0.0.1:8265}}
# `ray job stop` sends SIGTERM and waits RAY_JOB_STOP_WAIT_TIME_S (Ray's default: 3 s)
# before SIGKILL; the driver needs up to one PPO iteration to checkpoint on its way out.
runtime_env='{"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": "'"${RAY_JOB_STOP_WAIT_TIME_S:-600}"'"}}'
# shellcheck disable=SC2086  # RAY_SUBMIT_ARGS is a list of flags
exec ray job submit --address "$address" --working-dir . --runtime-env-json "$runtime_env" \
  ${RAY_SUBMIT_ARGS:-} -- actorlearner pipeline --config "$config" "$@"
