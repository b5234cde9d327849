#!/usr/bin/env bash
# Installs charlm as a user or a packager would, into scratch directories, and uses what was installed:
# `cmake --install` into a prefix (the binary runs, the man page renders without a warning and names every option
# of every command, the bash completion completes commands, options, choices and file names, the zsh and fish
# completions parse and fish's completes), then the Debian package (its dependencies come from dpkg-shlibdeps,
# its man page is gzipped -9n and man reads it, and the binary unpacked from it trains and samples).
# Usage: tests/test_install.sh BUILD_DIR CHARLM_BINARY   (ctest passes them)
# zsh and fish are installed by scripts/test.sh (setup.sh --package); without them their checks skip, and the
# whole test reports a skip (77), except under CI=true, where a missing tool fails.
set -uo pipefail

build="$(cd "${1:?usage: test_install.sh BUILD_DIR CHARLM_BINARY}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failures=0
skipped=()
fail() { echo "test_install: FAILED: $*" >&2; failures=$((failures + 1)); }
need() {  # need TOOL PACKAGE: whether TOOL is here; where not, a skip (a failure under CI)
  command -v "$1" >/dev/null && return 0
  if [ "${CI:-}" = true ]; then fail "$1 is missing (apt-get install $2; scripts/setup.sh --package)"; else skipped+=("$1 (apt-get install $2)"); fi
  return 1
}

# ---- cmake --install into a prefix ----
prefix="$work/prefix"
if ! cmake --install "$build" --prefix "$prefix" > "$work/install.log" 2>&1; then
  cat "$work/install.log" >&2
  fail "cmake --install failed"
  exit 1
fi
installed="$prefix/bin/charlm"
"$installed" --version | grep -q '^charlm [0-9]' || fail "the installed binary does not say its version"
for file in share/man/man1/charlm.1 share/bash-completion/completions/charlm share/zsh/vendor-completions/_charlm \
            share/fish/vendor_completions.d/charlm.fish share/doc/charlm/README.md share/doc/charlm/docs/train.md; do
  [ -s "$prefix/$file" ] || fail "cmake --install did not put $file in place"
done

# The man page: groff with every warning on must say nothing, and every option of every command must be in it.
man_page="$prefix/share/man/man1/charlm.1"
if need groff groff-base; then
  groff -man -Tutf8 -ww -z "$man_page" 2> "$work/groff.log"
  [ -s "$work/groff.log" ] && fail "groff warns about the man page: $(head -3 "$work/groff.log")"
  rendered="$(groff -man -Tutf8 "$man_page" 2>/dev/null | sed 's/.\x08//g')"
  # The synopsis as --help writes it (serve takes several checkpoints), and no Markdown left in the text.
  grep -q 'charlm serve \[OPTIONS\] CHECKPOINT\.\.\.' <<< "$rendered" || fail "the man page's synopsis of serve is not 'charlm serve [OPTIONS] CHECKPOINT...'"
  grep -q '`' <<< "$rendered" && fail "the man page shows Markdown's backticks: $(grep -m1 '`' <<< "$rendered")"
  for command in train sample eval serve info plot bench; do
    "$installed" "$command" --help | grep -oE '^  +(-[a-z],)?--[a-z][a-z0-9-]*' | grep -oE -- '--[a-z0-9-]+' > "$work/options"
    [ -s "$work/options" ] || fail "no options read from 'charlm $command --help'"
    grep -q "charlm $command \[OPTIONS\]" <<< "$rendered" || fail "the man page has no section for charlm $command"
    while read -r option; do
      grep -q -- "$option" <<< "$rendered" || fail "the man page does not name $command's $option"
    done < "$work/options"
  done
fi

# bash: completes in a real bash, with COMP_WORDS as readline would set them.
completion="$prefix/share/bash-completion/completions/charlm"
complete_bash() {  # complete_bash WORD...: what bash offers for the last word
  (cd "$work/files" && bash -c 'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _charlm; printf "%s\n" "${COMPREPLY[@]}"' \
     complete "$completion" "$@")
}
mkdir -p "$work/files/a run" && touch "$work/files/corpus.txt"
expect_bash() {  # expect_bash WANTED WORD...: WANTED is among the completions (or, for "", there are none)
  local wanted="$1"; shift
  local offered; offered="$(complete_bash "$@")"
  if [ -z "$wanted" ]; then
    [ -z "$offered" ] || fail "bash offers '$offered' for '$*', where nothing fits"
  else
    grep -qxF -- "$wanted" <<< "$offered" || fail "bash does not offer '$wanted' for '$*' (it offers: $(echo $offered))"
  fi
}
expect_bash sample charlm sa
expect_bash --temperature charlm sample --te
expect_bash --init-from charlm train --in
expect_bash corpus.txt charlm train ""
expect_bash corpus.txt charlm train --val co
expect_bash "a run" charlm train --out "a"
expect_bash minutes charlm plot --by m
expect_bash "" charlm train --lr ""
expect_bash "" charlm train --out corp  # a directory: corpus.txt is a file
# Every argument whose value --help names as a path completes as one.
for command in train sample eval serve info plot bench; do
  "$installed" "$command" --help | grep -oE -- '^  +(--[a-z-]+|[A-Z_]+) (FILE|PATH|DIR|RUN_DIR|CHECKPOINT|REPORT\.html)\b' |
    awk '{print $1, $2}' > "$work/paths"
  while read -r argument value; do
    wanted=corpus.txt start=co
    case "$value" in *DIR) wanted="a run" start=a ;; esac  # a directory: the file is not offered
    case "$argument" in
      --*) expect_bash "$wanted" charlm "$command" "$argument" "$start" ;;
      *) expect_bash "$wanted" charlm "$command" "$start" ;;
    esac
  done < "$work/paths"
done

if need zsh zsh; then
  zsh -n "$prefix/share/zsh/vendor-completions/_charlm" 2> "$work/zsh.log" || fail "zsh cannot parse _charlm: $(head -3 "$work/zsh.log")"
fi
if need fish fish; then
  fish_completion="$prefix/share/fish/vendor_completions.d/charlm.fish"
  fish --no-execute "$fish_completion" 2> "$work/fish.log" || fail "fish cannot parse charlm.fish: $(head -3 "$work/fish.log")"
  offered="$(cd "$work/files" && HOME="$work" fish --no-config -c "source '$fish_completion'; complete -C 'charlm sample --te'; complete -C 'charlm sa'; complete -C 'charlm plot --by '" 2>&1)"
  for wanted in --temperature sample minutes; do
    grep -q -- "^$wanted" <<< "$offered" || fail "fish does not offer $wanted (it offers: $(echo $offered | head -c 300))"
  done
fi

# ---- The Debian package ----
if need dpkg-shlibdeps dpkg-dev; then
  (cd "$work" && cpack -G DEB -B "$work/package" --config "$build/CPackConfig.cmake" > "$work/cpack.log" 2>&1) ||
    { cat "$work/cpack.log" >&2; fail "cpack -G DEB failed"; }
  package="$(ls "$work"/package/charlm_*.deb 2>/dev/null | head -1)"
  if [ -z "$package" ]; then
    fail "cpack wrote no charlm_VERSION_ARCH.deb"
  else
    echo "test_install: $(basename "$package"), $(du -k "$package" | cut -f1) KiB"
    depends="$(dpkg-deb -f "$package" Depends)"
    echo "test_install: Depends: $depends"
    # The libraries the binary links, as dpkg-shlibdeps found them: libc and the C++ runtime always, oneDNN
    # and Open MPI where this build links them.
    for library in libc6 libstdc++6 libgomp1; do
      grep -q "$library" <<< "$depends" || fail "the package does not depend on $library: $depends"
    done
    if ldd "$build/charlm" | grep -q libdnnl; then grep -q libdnnl <<< "$depends" || fail "no dependency on oneDNN: $depends"; fi
    if ldd "$build/charlm" | grep -q libmpi; then grep -q libopenmpi <<< "$depends" || fail "no dependency on Open MPI: $depends"; fi
    dpkg-deb -x "$package" "$work/root"
    for file in usr/bin/charlm usr/share/man/man1/charlm.1.gz usr/share/bash-completion/completions/charlm; do
      [ -e "$work/root/$file" ] || fail "the package has no /$file"
    done
    # The man page gzipped as Debian's policy has it (gzip -9n: no file name nor time stamp in the header, so
    # that the same page makes the same package), and the same page as cmake --install's.
    packaged_page="$work/root/usr/share/man/man1/charlm.1.gz"
    [ -e "$work/root/usr/share/man/man1/charlm.1" ] && fail "the package has an uncompressed /usr/share/man/man1/charlm.1"
    if [ -e "$packaged_page" ]; then
      header="$(od -An -tx1 -N10 "$packaged_page" | tr -d ' \n')"
      # Bytes 0-1 the magic, 2 deflate, 3 the flags (8: a file name follows), 4-7 the time stamp, 8 the level (2: -9).
      [[ "$header" == 1f8b08* ]] || fail "charlm.1.gz is not gzip: $header"
      [ "${header:6:2}" = 00 ] || fail "charlm.1.gz's header names a file (gzip without -n): flags ${header:6:2}"
      [ "${header:8:8}" = 00000000 ] || fail "charlm.1.gz's header has a time stamp (gzip without -n): ${header:8:8}"
      [ "${header:16:2}" = 02 ] || fail "charlm.1.gz is not compressed with -9: extra flags ${header:16:2}"
      cmp -s <(gzip -dc "$packaged_page") "$man_page" || fail "the package's charlm.1.gz is not the page cmake --install puts in place"
      if need man man-db; then
        found="$(man -M "$work/root/usr/share/man" -w charlm 2>&1)"
        [ "$found" = "$packaged_page" ] || fail "man -w finds '$found' where the package has $packaged_page"
        shown="$(man -M "$work/root/usr/share/man" -P cat charlm 2>&1 | sed 's/.\x08//g')"
        grep -q "charlm train \[OPTIONS\]" <<< "$shown" || fail "man does not show the package's gzipped page: $(head -3 <<< "$shown")"
      fi
    fi
    unpacked="$work/root/usr/bin/charlm"
    for i in $(seq 300); do echo "the quick brown fox jumps over the lazy dog"; done > "$work/corpus.txt"
    "$unpacked" train "$work/corpus.txt" --out "$work/run" --layers 1 --hidden 16 --seq 16 --batch 4 --steps 5 --threads 1 --quiet \
      > "$work/train.log" 2>&1 || { cat "$work/train.log" >&2; fail "the packaged binary cannot train"; }
    sample="$("$unpacked" sample "$work/run/last.safetensors" --prompt "the " --length 20 --seed 1 2>&1)" ||
      fail "the packaged binary cannot sample: $sample"
    [ "${#sample}" -ge 24 ] || fail "the packaged binary sampled too little: '$sample'"
  fi
fi

if [ "$failures" -gt 0 ]; then
  echo "test_install: $failures check(s) failed" >&2
  exit 1
fi
if [ "${#skipped[@]}" -gt 0 ]; then
  echo "test_install: passed, but left out the checks that need: ${skipped[*]}"
  exit 77
fi
echo "test_install: passed"
