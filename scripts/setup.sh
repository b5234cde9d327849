#!/usr/bin/env bash
# Installs what charlm needs from Debian's packages (only what is missing), then builds it with CMake.
# Usage: scripts/setup.sh [--demo] [--bench] [--interop] [--browser] [--package] [--fuzz] [--build-dir DIR] [--target NAME]
#                         [-- extra cmake arguments]
# Without --target it builds everything the configuration names: the tests and the benchmarks too unless the extra
# arguments turn them off (-DCHARLM_TESTS=OFF -DCHARLM_BENCH=OFF, as scripts/demo.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(g++ cmake make pkg-config libeigen3-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev libutfcpp-dev libssl-dev libgtest-dev libcpp-httplib-dev libboost-dev
  libopenmpi-dev openmpi-bin
  libdnnl-dev ocl-icd-opencl-dev)
build_dir=build
# The demo configures build/ without tests and benchmarks, and CMake's cache would keep that for every later
# build there: name the full build here, so that the caller's arguments (after --) alone turn parts off.
cmake_arguments=(-DCHARLM_TESTS=ON -DCHARLM_BENCH=ON)
build_target=()
while [ $# -gt 0 ]; do
  case "$1" in
    --demo) packages+=(bible-kjv) ;;
    # python3-torch is content with the reference BLAS (libblas3), 10-15x slower than OpenBLAS: the
    # PyTorch peer would measure a strawman, so OpenBLAS comes with it.
    --bench) packages+=(python3-torch libopenblas0-pthread) ;;
    --interop) packages+=(python3-torch libopenblas0-pthread gnuplot-nox) ;;
    --browser) packages+=(chromium chromium-driver python3-selenium) ;;  # the serve page's test in headless Chromium
    --package) packages+=(dpkg-dev groff-base zsh fish) ;;  # the Debian package, and its test's man page and shells
    --fuzz) packages+=(clang-14 libclang-rt-14-dev libomp-14-dev python3) ;;
    --build-dir) build_dir="$2"; shift ;;
    --target) build_target=(--target "$2"); shift ;;  # e.g. charlm: the binary and the libraries it links, nothing else
    --) shift; cmake_arguments+=("$@"); break ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option $1; see scripts/setup.sh --help" >&2; exit 2 ;;
  esac
  shift
done

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "${cmake_arguments[@]}" >&2
cmake --build "$build_dir" -j "$(nproc)" "${build_target[@]}" >&2
