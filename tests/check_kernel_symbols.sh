#!/usr/bin/env bash
# The ODR trap of per-level kernels, checked on the objects (src/nn/kernels.hpp): an inline function or a
# template from a header (Eigen's, or charlm's cell_units.hpp) compiled into two levels' objects under the
# same name is kept once by the linker, which may then run the AVX-512 copy on an AVX2 machine. So every
# symbol a level's object defines for the linker (global or weak) must be that level's own, named in its
# namespaces (charlm::kernels_LEVEL, Eigen_LEVEL), and none may be defined by any other object of the library.
# Usage: tests/check_kernel_symbols.sh LIBRARY_ARCHIVE LEVEL=OBJECT...   (ctest passes them)
set -uo pipefail
archive="$(realpath "${1:?usage: check_kernel_symbols.sh LIBRARY_ARCHIVE LEVEL=OBJECT...}")"
shift
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
# Defined symbols the linker sees from outside (T D B R V W u, and their weak object forms), mangled.
# Less what the compiler makes alike in every object: clang's reference to the C++ exception personality
# (DW.ref.__gxx_personality_v0, one shared copy by design) and AddressSanitizer's ODR indicators (__odr_asan.*).
external() {
  nm --defined-only "$@" 2>/dev/null | awk 'NF == 3 && $2 ~ /^[A-Zuvw]$/ {print $3}' |
    grep -vE '^(DW\.ref\.__gxx_personality_v0$|__odr_asan\.)' | sort -u
}

# Everything the library defines outside the kernels' objects: the archive's members less those of kernel_level.cpp.
mkdir "$work/members"
(cd "$work/members" && ar x "$archive" 2>/dev/null) || { echo "check_kernel_symbols: cannot unpack $archive" >&2; exit 1; }
rm -f "$work/members/kernel_level.cpp.o"  # ar x keeps one of the levels' same-named members: they are checked below
external "$work"/members/*.o > "$work/others"
[ -s "$work/others" ] || { echo "check_kernel_symbols: no symbols read from $archive" >&2; exit 1; }

for argument in "$@"; do
  level="${argument%%=*}" object="${argument#*=}"
  external "$object" > "$work/$level"
  count=$(wc -l < "$work/$level")
  [ "$count" -gt 0 ] || { echo "check_kernel_symbols: FAILED: no symbols read from $object" >&2; failures=$((failures + 1)); continue; }
  grep -q "kernels_${level}.*kernel_set" < <(c++filt < "$work/$level") ||
    { echo "check_kernel_symbols: FAILED: $object does not define charlm::kernels_${level}::kernel_set" >&2; failures=$((failures + 1)); }
  foreign="$(c++filt < "$work/$level" | grep -vE "kernels_${level}\b|Eigen_${level}\b" | head -5 | cut -c1-200)"
  if [ -n "$foreign" ]; then
    echo "check_kernel_symbols: FAILED: the $level kernels define symbols not of their own namespaces, which another object could share:" >&2
    echo "$foreign" >&2
    failures=$((failures + 1))
  fi
  shared="$(comm -12 "$work/$level" "$work/others" | c++filt | head -5 | cut -c1-200)"
  if [ -n "$shared" ]; then
    echo "check_kernel_symbols: FAILED: the $level kernels and the rest of the library both define:" >&2
    echo "$shared" >&2
    failures=$((failures + 1))
  fi
  echo "check_kernel_symbols: $level: $count symbols, each of its own namespaces, none defined elsewhere"
done
[ "$failures" -eq 0 ] || exit 1
echo "check_kernel_symbols: passed"
