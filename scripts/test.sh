#!/usr/bin/env bash
# The project's checks: lint, format, types, then the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check .
ruff format --check .
mypy
python3 -m pytest -q "$@"
