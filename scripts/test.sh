#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite with ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --build-dir build -- -DCHARLM_TESTS=ON
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 600
