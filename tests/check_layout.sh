#!/usr/bin/env bash
# The layout's rules, checked: includes run only down the order of the folders (so none closes a loop),
# only src/cli talks to the terminal (spdlog), no C++ file under src/ or include/ passes 500 lines, and
# the file with main() stays a table of commands (200 lines at most).
#
# Usage: tests/check_layout.sh [SOURCE_DIR]
set -uo pipefail
cd "${1:-$(dirname "$0")/..}" || exit 1

# Bottom to top: a file may include what is in its own folder or in one before it.
order=(base parallel text nn io report train serve bench cli)
level_of_folder() {
  local i
  for i in "${!order[@]}"; do [ "${order[$i]}" = "$1" ] && { echo "$i"; return; }; done
  echo "unknown"
}
# Each public header's folder: where the module it is the face of lives. A new header is added here.
declare -A public_header_folder=(
  [error]=base [atomic_file]=base [tensor]=base [json_integer]=base [json_limits]=base [clock]=base [uniform_draw]=base
  [threads]=parallel [communicator]=parallel
  [text]=text [utf8]=text [vocab]=text [tokens]=text [ids_file]=text [file_identity]=text [display]=text [batches]=text
  [model_config]=nn [precision]=nn [model]=nn [optim]=nn [sample]=nn [eval]=nn [score]=nn
  [checkpoint]=io [run_lock]=io
  [report]=report [plot]=report
  [train]=train [progress]=train
  [server]=serve [decode]=serve
  [bench]=bench
)
folder_of_public_header() {
  echo "${public_header_folder[$1]:-unknown}"
}
# The folder an include names: "charlm/x.hpp" by its header's folder, "nn/gemm.hpp" by its path; a private
# header beside the including file ("gemm.hpp", "cells/lstm.hpp") is in the includer's own folder.
folder_of_include() {
  local included=$1 includer_folder=$2
  case "$included" in
    charlm/*) folder_of_public_header "$(basename "$included" .hpp)" ;;
    *.inc) echo "$includer_folder" ;;
    */*)
      local first=${included%%/*}
      if [ -d "src/$first" ]; then echo "$first"; else echo "$includer_folder"; fi ;;
    *) echo "$includer_folder" ;;
  esac
}

failures=0
fail() { echo "check_layout: $*" >&2; failures=$((failures + 1)); }

files=$(find src include -name '*.cpp' -o -name '*.hpp' | sort)
for file in $files; do
  case "$file" in
    include/charlm/*)
      folder=$(folder_of_public_header "$(basename "$file" .hpp)")
      [ "$folder" = unknown ] && { fail "$file: a public header not listed in public_header_folder"; continue; } ;;
    src/*/*) folder=$(echo "$file" | cut -d/ -f2) ;;
    *) fail "$file: outside the folders ${order[*]}"; continue ;;
  esac
  level=$(level_of_folder "$folder")
  [ "$level" = unknown ] && { fail "$file: in folder '$folder', which is not one of ${order[*]}"; continue; }
  while IFS= read -r included; do
    [ -z "$included" ] && continue
    target=$(folder_of_include "$included" "$folder")
    target_level=$(level_of_folder "$target")
    if [ "$target_level" = unknown ]; then
      fail "$file includes \"$included\", whose folder is unknown: list it in public_header_folder"
    elif [ "$target_level" -gt "$level" ]; then
      fail "$file ($folder) includes \"$included\" ($target), a folder above it: ${order[*]}"
    fi
  done < <(sed -nE 's/^[[:space:]]*#[[:space:]]*include[[:space:]]+"([^"]+)".*/\1/p' "$file")
  if [ "$folder" != cli ] && grep -qE '#[[:space:]]*include[[:space:]]*<spdlog/' "$file"; then
    fail "$file includes spdlog: only src/cli writes to the terminal; report through a sink"
  fi
  lines=$(wc -l <"$file")
  [ "$lines" -gt 500 ] && fail "$file has $lines lines, more than 500: split it by what it does"
done
main_lines=$(wc -l <src/cli/main.cpp)
[ "$main_lines" -gt 200 ] && fail "src/cli/main.cpp has $main_lines lines, more than 200: it is a table of commands"

checked=$(echo "$files" | wc -w)
if [ "$failures" -gt 0 ]; then
  echo "check_layout: $failures problems in $checked files" >&2
  exit 1
fi
echo "check_layout: $checked files follow the layout (${order[*]})"
