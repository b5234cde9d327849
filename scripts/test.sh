#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite with ctest.
# Usage: scripts/test.sh [--sanitize]   (--sanitize: the tests of compiled code under AddressSanitizer and UBSan, in build-sanitize)
set -euo pipefail
case "${1:-}" in
  ""|--sanitize) [ $# -le 1 ] || { echo "test.sh: one option at most; see scripts/test.sh --help" >&2; exit 2; } ;;
  -h|--help) sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "test.sh: unknown option $1; see scripts/test.sh --help" >&2; exit 2 ;;
esac
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
# Chromium drives the page of `charlm serve`; dpkg-dev, groff, zsh and fish check the installed files and the package.
scripts/setup.sh --interop --browser --package --build-dir "$build_dir" -- "${cmake_arguments[@]}"

# The only tests that may skip, each with why. Any other skip fails the suite: a tool that went missing, or
# a suite that stopped running, must not pass unseen. Each entry: "TEST NAME|why it may skip", and those
# that need instructions this CPU may lack are added below only where it lacks them.
allowed_skips=(
  "Train.AModelTooLargeForThisMachineIsRefusedBeforeAnythingIsAllocated|the refusal is seen only on a machine with under 30 GB of memory"
)
# The CPU's flags as the kernels see them: CHARLM_BF16=0 or emulate answers as a CPU without AVX512_BF16.
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
case "${CHARLM_BF16:-}" in 0|emulate) cpu_flags="${cpu_flags// avx512_bf16 / }" ;; esac
cpu_lacks() {
  local flag
  for flag in "$@"; do [[ "$cpu_flags" == *" $flag "* ]] || return 0; done
  return 1
}
if cpu_lacks avx2 fma; then
  allowed_skips+=("engine_kernels_avx2|this CPU lacks AVX2 or FMA, so the avx2 kernels are refused (as the test checks)")
fi
avx512="avx512f avx512dq avx512bw avx512vl avx512cd"  # the avx512 level's needs (src/nn/kernels.cpp)
if cpu_lacks $avx512; then
  allowed_skips+=("engine_kernels_avx512|this CPU lacks AVX-512, so the avx512 kernels are refused (as the test checks)")
fi
if cpu_lacks $avx512 avx512_bf16; then
  allowed_skips+=(
    "engine_kernels_avx512bf16|this CPU lacks AVX512_BF16, so the avx512bf16 kernels are refused (as the test checks)"
    "Bf16.AutoPicksFp32WhereTheRealTimingFindsBf16Slower|this CPU lacks AVX512_BF16: auto is fp32 without a timing to check"
  )
fi
log="$build_dir/ctest.log"
status=0
ctest --test-dir "$build_dir" --output-on-failure --no-tests=error -j "$(nproc)" --timeout 900 2>&1 | tee "$log" || status=$?
# ctest lists what did not run after "The following tests did not run:", one "  N - NAME (Skipped)" a line.
skipped="$(sed -n '/^The following tests did not run:/,/^$/s/^[[:space:]]*[0-9]* - \(.*\) (Skipped)$/\1/p' "$log")"
while IFS= read -r name; do
  [ -n "$name" ] || continue
  reason=""
  for entry in "${allowed_skips[@]}"; do
    [ "${entry%%|*}" = "$name" ] && reason="${entry#*|}"
  done
  if [ -n "$reason" ]; then
    echo "test: $name skipped, as allowed: $reason"
  else
    echo "test: FAILED: $name skipped, and it is not in scripts/test.sh's allowed_skips" \
      "(its reason: ctest --test-dir $build_dir -R '^$name\$' -V)" >&2
    status=1
  fi
done <<< "$skipped"
exit "$status"
