#!/usr/bin/env bash
# The engine's unit tests with one level of the kernels forced (CHARLM_KERNELS, src/nn/kernels.hpp): the
# packed products, the cells forward and backward against their references, the recurrent layer, the
# bf16 products, the table's gradient, Adam's update, the loss, the model's gradients and the checkpoints,
# each at the level the CPU would not choose
# by itself. Where the CPU lacks the level, the level must be refused (Kernels.TheLevelInUseIsTheOneAskedOrTheBest
# checks the refusal), and the test reports a skip (77) that says so.
# Under the sanitizers (--sanitized) only the tests of what is compiled once per level run (the model's
# loss and its gradient by Model.Loss* and Model.OneLayerGradients*): the model's other gradients, the
# checkpoints and the short trainings go through the same kernels but cost minutes there, and the plain
# build runs them at every level.
# Usage: tests/test_kernel_level.sh LEVEL TESTS_BINARY [--sanitized]   (ctest passes them)
set -uo pipefail
level="${1:?usage: test_kernel_level.sh LEVEL TESTS_BINARY}"
tests="${2:?usage: test_kernel_level.sh LEVEL TESTS_BINARY}"
export CHARLM_KERNELS="$level"
first="$("$tests" --gtest_filter='Kernels.TheLevelInUseIsTheOneAskedOrTheBest' 2>&1)" || { echo "$first"; exit 1; }
if grep -q '^\[  SKIPPED \]' <<< "$first"; then
  echo "SKIPPED: this CPU lacks the $level kernels; CHARLM_KERNELS=$level is refused, as it should be"
  exit 77
fi
grep -q '^\[  PASSED  \] 1 test' <<< "$first" || { echo "$first"; echo "test_kernel_level: the level check did not run"; exit 1; }
filter='Kernels.*:Gemm.*:Bf16.*:*Bf16Cells.*:*RecurrentLayerTest.*:Lstm.*:Gru.*:Rnn.*:LayerInput.*:RowShares.*:RowBalance.*:Optim.Adam*'
if [ "${3:-}" = "--sanitized" ]; then
  filter="$filter:Model.Loss*:Model.OneLayerGradients*-Bf16.AShortTraining*:Bf16.Auto*"  # trainings and timings, not kernels: the plain build runs them per level
else
  filter="$filter:Model.*:Checkpoint.*"
fi
exec "$tests" --gtest_filter="$filter"
