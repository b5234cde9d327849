#!/usr/bin/env bash
# Builds the Debian package: charlm_VERSION_ARCH.deb in build-package/ (build-package-native/ with --native), with
# the binary, its man page (gzipped, as Debian's policy has it), the bash, zsh and fish completions and the docs;
# its dependencies are the libraries the binary links (dpkg-shlibdeps). The binary is portable
# (-DCHARLM_NATIVE=OFF: the instructions of every x86-64, its hot kernels chosen at run time from the CPU:
# docs/building.md) so that it starts on any machine of the architecture; --native builds for this machine's CPU
# instead, faster here and perhaps nowhere else, in a folder of its own so that the two can be compared.
# Install it with: sudo apt-get install ./build-package/charlm_*.deb   (and remove it with: sudo apt-get remove charlm)
# Usage: scripts/package.sh [--native]
set -euo pipefail
cd "$(dirname "$0")/.."
native=OFF
build_dir=build-package
case "${1:-}" in
  --native) native=ON build_dir=build-package-native ;;  # a folder of its own: the portable build stays, to compare
  "") ;;
  -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "package.sh: unknown option $1; see scripts/package.sh --help" >&2; exit 2 ;;
esac
scripts/setup.sh --package --build-dir "$build_dir" -- -DCHARLM_NATIVE="$native" -DCHARLM_TESTS=OFF -DCHARLM_BENCH=OFF
(cd "$build_dir" && cpack -G DEB >&2)
ls "$build_dir"/charlm_*.deb
