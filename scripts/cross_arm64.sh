#!/usr/bin/env bash
# Cross-builds charlm for arm64 (aarch64) with Debian's cross toolchain and runs the engine's unit tests (the
# packed products, the cells, the recurrent layer, the bf16 products, the model, dropout, Adam, the
# checkpoints) under qemu-user, then a short training and a sample with the arm64 binary. Run by hand
# (docs/building.md has its last output and how long it took); it installs what it needs, and changes this
# machine's dpkg state: it adds the arm64 architecture and the :arm64 development packages that can sit
# beside the amd64 ones. oneDNN's cannot (the two dnnl_config.h differ): its .debs are unpacked into
# BUILD_DIR/sysroot instead, which cmake/arm64-toolchain.cmake searches. Open MPI is left out (see
# docs/building.md): the arm64 build trains as one process.
# Usage: scripts/cross_arm64.sh [--build-dir DIR] [--leave-out-slow]   (default build-arm64; nice -n 10 on a
#        shared machine). --leave-out-slow leaves out the 8 tests that take over 90% of the engine tests' time
#        (a short bf16 training, the gradient checks of the longest windows, overfitting a corpus), which
#        under qemu take long. --engine-only compiles the library and the engine's 10 test files alone (not the
#        command line's 13 files, the binary and the other 9 test files: on a busy machine the whole build takes
#        hours), links them into BUILD_DIR/tests/engine_tests with charlm_tests' link command less the others,
#        and runs those tests; no training with the binary then.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=build-arm64
leave_out=""
engine_only=no
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build_dir="$2"; shift ;;
    --leave-out-slow)
      leave_out=":Bf16.AShortTrainingEndsWithinTwoHundredthsOfANatOfFp32:*InFullChunksWithTheBatchSplitBetweenTwoThreads/*"
      leave_out+=":Model.OverfitsATinyCorpus:Model.GradientsWithDropoutMatchFiniteDifferences"
      leave_out+=":Model.GradientsWithEveryMaskAtOnceMatchFiniteDifferences:Model.GradientsWithWeightDropMatchFiniteDifferences"
      leave_out="-${leave_out#:}" ;;
    --engine-only) engine_only=yes ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "cross_arm64.sh: unknown option $1; see scripts/cross_arm64.sh --help" >&2; exit 2 ;;
  esac
  shift
done
started=$SECONDS

packages=(crossbuild-essential-arm64 qemu-user cmake make pkg-config
  libeigen3-dev libcli11-dev nlohmann-json3-dev libutfcpp-dev  # headers alone, one package for every architecture
  libgtest-dev:arm64 libssl-dev:arm64 libfmt-dev:arm64 libspdlog-dev:arm64 libcpp-httplib-dev:arm64)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "cross_arm64: adding the arm64 architecture to dpkg" >&2
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
fi
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  $sudo apt-get update -qq
  # Never at the cost of an amd64 package: a -dev package that is not co-installable would remove its amd64 twin.
  removals="$(apt-get install -s --no-install-recommends "${missing[@]}" 2>&1 | grep '^Remv' || true)"
  if [ -n "$removals" ]; then
    echo "cross_arm64: installing ${missing[*]} would remove amd64 packages; not done:" >&2
    echo "$removals" >&2
    exit 1
  fi
  echo "cross_arm64: installing ${missing[*]}" >&2
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# oneDNN for arm64, unpacked (dpkg -x) into a folder of the build's own rather than installed: the :arm64 -dev
# package would replace the amd64 one. Its runtime needs only libc, libgcc, libgomp and libstdc++, which the
# cross toolchain has.
sysroot="$(mkdir -p "$build_dir" && cd "$build_dir" && pwd)/sysroot"
sysroot_packages=(libdnnl-dev:arm64 libdnnl2:arm64)
if [ "$(cat "$sysroot/.packages" 2>/dev/null)" != "${sysroot_packages[*]}" ]; then
  echo "cross_arm64: unpacking ${sysroot_packages[*]} into $sysroot" >&2
  rm -rf "$sysroot" && mkdir -p "$sysroot/debs"
  (cd "$sysroot/debs" && apt-get download -qq -o APT::Sandbox::User=root "${sysroot_packages[@]}" >&2)
  for deb in "$sysroot"/debs/*.deb; do dpkg -x "$deb" "$sysroot"; done
  echo "${sysroot_packages[*]}" > "$sysroot/.packages"
fi
launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi

echo "cross_arm64: configuring $build_dir (portable flags, oneDNN's products, one process)" >&2
cmake -S . -B "$build_dir" -DCMAKE_TOOLCHAIN_FILE=cmake/arm64-toolchain.cmake -DCHARLM_ARM64_SYSROOT="$sysroot" \
  -DCMAKE_BUILD_TYPE=Release -DCHARLM_NATIVE=OFF -DCHARLM_ONEDNN=ON -DCHARLM_MPI=OFF -DCHARLM_BENCH=OFF \
  -DCHARLM_TESTS=ON "${launcher[@]}" > "$build_dir/configure.log" 2>&1 || { cat "$build_dir/configure.log" >&2; exit 1; }
grep -q 'large matrix products through oneDNN' "$build_dir/configure.log" ||
  { cat "$build_dir/configure.log" >&2; echo "cross_arm64: CMake did not find the unpacked oneDNN" >&2; exit 1; }
if [ "$engine_only" = yes ]; then
  # The engine's tests need the library alone: their objects, through the Makefile generator's per-object
  # targets, then charlm_tests' own link command with only those objects and without the command line's library.
  engine_tests=(test_gemm test_kernels test_bf16 test_row_shares test_input_projection test_recurrent_layer test_dropout
    test_model test_optim test_checkpoint)
  cmake --build "$build_dir" -j "$(nproc)" --target charlm_lib >&2
  make -C "$build_dir/tests" -j "$(nproc)" "${engine_tests[@]/%/.cpp.o}" >&2
  objects=""
  for test in "${engine_tests[@]}"; do objects+=" CMakeFiles/charlm_tests.dir/$test.cpp.o"; done
  link="$(sed -E 's| CMakeFiles/charlm_tests\.dir/[a-z0-9_]+\.cpp\.o||g; s| -o charlm_tests | -o engine_tests |; s| \.\./libcharlm_cli\.a||' \
    "$build_dir/tests/CMakeFiles/charlm_tests.dir/link.txt")"
  link="${link/ -o engine_tests /$objects -o engine_tests }"
  (cd "$build_dir/tests" && eval "$link") >&2
  tests_binary="$build_dir/tests/engine_tests"
else
  cmake --build "$build_dir" -j "$(nproc)" --target charlm charlm_tests >&2
  tests_binary="$build_dir/tests/charlm_tests"
fi
built=$SECONDS

# OMP_WAIT_POLICY=passive: an emulated OpenMP thread that spins at a barrier takes the host core its peer needs.
# No -L /usr/aarch64-linux-gnu: the :arm64 libraries above bring libc6:arm64, and the binary's loader is then
# /lib/ld-linux-aarch64.so.1 from that same package. -L would load the cross toolchain's ld.so (libc6-arm64-cross,
# another build of glibc) beside libc6:arm64's libc.so.6, and that mismatched pair hangs in the first
# pthread_create (seen here: 2.36-8cross1's loader with 2.36-9+deb12u14's libc; a static binary ran).
run_arm64() {
  qemu-aarch64 -E LD_LIBRARY_PATH="$sysroot/usr/lib/aarch64-linux-gnu" -E OMP_WAIT_POLICY=passive "$@"
}
file "$tests_binary" | sed 's/, BuildID[^,]*//'
echo "cross_arm64: $(basename "$tests_binary") links $(readelf -d "$tests_binary" | grep -oE 'NEEDED.*\[[^]]+\]' | grep -oE '\[[^]]+' | tr -d '[' | tr '\n' ' ')"
# The engine's tests (those that ctest's engine_kernels_LEVEL runs on x86, and dropout's and Adam's) under qemu.
# Each test's name as it starts and ends: under qemu the run takes long, and a brief one says nothing until its end.
run_arm64 "$tests_binary" \
  --gtest_filter="Kernels.*:Gemm.*:Bf16.*:*Bf16Cells.*:*RecurrentLayerTest.*:Lstm.*:Gru.*:Rnn.*:LayerInput.*:RowShares.*:RowBalance.*:Model.*:Checkpoint.*:Dropout.*:Optim.*$leave_out"
tested=$SECONDS
if [ "$engine_only" = yes ]; then
  echo "cross_arm64: built in $((built - started)) s, the tests took $((tested - built)) s under qemu"
  exit 0
fi
run_arm64 "$build_dir/charlm" --version
# And the binary as a user runs it: a short training, then a sample from its checkpoint.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for i in $(seq 300); do echo "the quick brown fox jumps over the lazy dog"; done > "$scratch/corpus.txt"
run_arm64 "$build_dir/charlm" train "$scratch/corpus.txt" --out "$scratch/run" --layers 1 --hidden 32 --seq 16 --batch 8 \
  --steps 20 --threads 2 --quiet
run_arm64 "$build_dir/charlm" sample "$scratch/run/last.safetensors" --prompt "the " --length 40 --seed 1
echo
echo "cross_arm64: built in $((built - started)) s, the tests took $((tested - built)) s under qemu, the training and the sample $((SECONDS - tested)) s"
