#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite with ctest.
# Usage: scripts/test.sh [--sanitize]   (--sanitize: the same suite under AddressSanitizer and UBSan, in build-sanitize)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=build
cmake_arguments=(-DCHARLM_TESTS=ON)
if [ "${1:-}" = "--sanitize" ]; then
  build_dir=build-sanitize
  # -O1 -g1: the sanitizers' advice, and much quicker to compile than -O2 -g for this template-heavy code.
  cmake_arguments+=(-DCHARLM_SANITIZE=ON -DCHARLM_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
    "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG")
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi
# PyTorch checks that checkpoints load into nn.LSTM/GRU/RNN; gnuplot draws `charlm plot`; headless
# Chromium drives the page of `charlm serve`.
scripts/setup.sh --interop --browser --build-dir "$build_dir" -- "${cmake_arguments[@]}"
ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)" --timeout 900
