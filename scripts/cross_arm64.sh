#!/usr/bin/env bash
# Cross-builds charlm for arm64 (aarch64) with Debian's cross toolchain and runs the engine's unit tests (the
# packed products, the cells, the recurrent layer, the bf16 products, the model, the checkpoints) under
# qemu-user, then a short training and a sample with the arm64 binary. Run by hand (docs/building.md has its
# last output and how long it took); it installs what it needs, and changes this machine's dpkg state: it adds
# the arm64 architecture and the :arm64 development packages that can sit beside the amd64 ones.
# Left out, because their :arm64 -dev packages cannot be installed beside the amd64 ones: oneDNN (libdnnl-dev
# ships a dnnl_config.h that differs by architecture: the arm64 build does its products on Eigen) and Open MPI
# (libopenmpi-dev:arm64 would remove the amd64 one: the arm64 build trains as one process).
# Usage: scripts/cross_arm64.sh [--build-dir DIR]     (default build-arm64)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=build-arm64
case "${1:-}" in
  --build-dir) build_dir="$2" ;;
  "") ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "cross_arm64.sh: unknown option $1; see scripts/cross_arm64.sh --help" >&2; exit 2 ;;
esac
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

echo "cross_arm64: configuring $build_dir (portable flags, Eigen's products, one process)" >&2
cmake -S . -B "$build_dir" -DCMAKE_TOOLCHAIN_FILE=cmake/arm64-toolchain.cmake -DCMAKE_BUILD_TYPE=Release \
  -DCHARLM_NATIVE=OFF -DCHARLM_ONEDNN=OFF -DCHARLM_MPI=OFF -DCHARLM_BENCH=OFF -DCHARLM_TESTS=ON >&2
cmake --build "$build_dir" -j "$(nproc)" --target charlm charlm_tests >&2
built=$SECONDS

run_arm64() { qemu-aarch64 -L /usr/aarch64-linux-gnu "$@"; }
file "$build_dir/charlm" | sed 's/, BuildID[^,]*//'
run_arm64 "$build_dir/charlm" --version
# The engine's tests, the cells' and the checkpoints', under qemu (charlm_tests reads CHARLM_KERNELS as on x86).
run_arm64 "$build_dir/tests/charlm_tests" --gtest_brief=1 \
  --gtest_filter='Kernels.*:Gemm.*:Bf16.*:*Bf16Cells.*:*RecurrentLayerTest.*:Lstm.*:Gru.*:Rnn.*:LayerInput.*:RowShares.*:RowBalance.*:Model.*:Checkpoint.*'
# And the binary as a user runs it: a short training, then a sample from its checkpoint.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for i in $(seq 300); do echo "the quick brown fox jumps over the lazy dog"; done > "$scratch/corpus.txt"
run_arm64 "$build_dir/charlm" train "$scratch/corpus.txt" --out "$scratch/run" --layers 1 --hidden 32 --seq 16 --batch 8 \
  --steps 20 --threads 2 --quiet
run_arm64 "$build_dir/charlm" sample "$scratch/run/last.safetensors" --prompt "the " --length 40 --seed 1
echo
echo "cross_arm64: built in $((built - started)) s, tested in $((SECONDS - built)) s"
