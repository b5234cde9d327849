#!/usr/bin/env bash
# The Debian package as a user meets it, on this machine: `apt-get install ./charlm_*.deb`, then the installed
# charlm on the PATH (--version, a short training and a sample), its man page (gzipped) where man finds it, the
# three shells' completions where they look, bash's loaded by bash-completion as a shell loads it; then
# `apt-get remove --purge charlm`, after which no file the package listed (dpkg -L) is left, nor a folder of its
# own. Run by hand, as root (it installs into /usr), not in CI: building the package is a portable build of its
# own (minutes on two cores). It refuses to run where a charlm package is already installed, so as to leave it
# alone. tests/test_apt_install_chroot.sh runs it inside a fresh Debian 12.
# Usage: tests/test_apt_install.sh [PACKAGE.deb]   (without one, scripts/package.sh builds it)
set -uo pipefail
cd "$(dirname "$0")/.."
failures=0
fail() { echo "test_apt_install: FAILED: $*" >&2; failures=$((failures + 1)); }
[ "$(id -u)" -eq 0 ] || { echo "test_apt_install: run it as root (it installs the package into /usr)" >&2; exit 2; }
if dpkg-query -W -f='${Status}' charlm 2>/dev/null | grep -q installed; then
  echo "test_apt_install: a charlm package is installed already; remove it first (apt-get remove charlm)" >&2
  exit 2
fi
package="${1:-}"
if [ -z "$package" ]; then package="$(scripts/package.sh | tail -1)" || { echo "test_apt_install: scripts/package.sh failed" >&2; exit 1; }; fi
package="$(realpath "$package")"
work="$(mktemp -d)"
trap 'rm -rf "$work"; dpkg-query -W charlm >/dev/null 2>&1 && apt-get remove --purge -y -qq charlm >/dev/null 2>&1' EXIT

echo "test_apt_install: $(basename "$package"): $(du -k "$package" | cut -f1) KiB, installed size $(dpkg-deb -f "$package" Installed-Size) KiB"
echo "test_apt_install: Depends: $(dpkg-deb -f "$package" Depends)"
echo "test_apt_install: Suggests: $(dpkg-deb -f "$package" Suggests)"

export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "$package" > "$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "apt-get install failed"; exit 1; }
dpkg -L charlm | sort > "$work/files"
[ "$(command -v charlm)" = /usr/bin/charlm ] || fail "charlm is not on the PATH as /usr/bin/charlm: $(command -v charlm)"
charlm --version | grep -q '^charlm [0-9]' || fail "the installed charlm does not say its version"
if command -v man >/dev/null; then
  man_page="$(man -w charlm 2>/dev/null)"
  [ "$man_page" = /usr/share/man/man1/charlm.1.gz ] && grep -qxF "$man_page" "$work/files" || fail "man -w charlm finds '$man_page', not the package's page"
  shown="$(man -P cat charlm 2>&1)"  # whole, not piped to grep -q: under pipefail man's SIGPIPE would fail it
  grep -q "charlm train" <<< "$shown" || fail "man charlm does not show the train command: $(head -3 <<< "$shown")"
else
  echo "test_apt_install: man is not installed (man-db): the man page's file alone is checked"
fi
for file in /usr/share/bash-completion/completions/charlm /usr/share/zsh/vendor-completions/_charlm \
            /usr/share/fish/vendor_completions.d/charlm.fish /usr/share/doc/charlm/README.md; do
  grep -qxF "$file" "$work/files" && [ -s "$file" ] || fail "the package did not install $file"
done
# bash as a user's shell loads it: bash-completion's loader finds the file by the command's name, on first use.
if [ -r /usr/share/bash-completion/bash_completion ]; then
  offered="$(bash -c 'source /usr/share/bash-completion/bash_completion; __load_completion charlm || exit 1
                      COMP_WORDS=(charlm sample --te); COMP_CWORD=2; _charlm; printf "%s\n" "${COMPREPLY[@]}"' 2>&1)"
  grep -qx -- --temperature <<< "$offered" || fail "bash-completion does not load charlm's completion, or it offers no --temperature: $offered"
else
  echo "test_apt_install: bash-completion is not installed: the completion's file alone is checked"
fi
for i in $(seq 300); do echo "the quick brown fox jumps over the lazy dog"; done > "$work/corpus.txt"
(cd "$work" && charlm train corpus.txt --out run --layers 1 --hidden 16 --seq 16 --batch 4 --steps 5 --threads 1 --quiet) \
  > "$work/train.log" 2>&1 || { cat "$work/train.log" >&2; fail "the installed charlm cannot train"; }
sample="$(charlm sample "$work/run/last.safetensors" --prompt "the " --length 20 --seed 1 2>&1)" || fail "the installed charlm cannot sample: $sample"
[ "${#sample}" -ge 24 ] || fail "the installed charlm sampled too little: '$sample'"

apt-get remove --purge -y -qq charlm > "$work/remove.log" 2>&1 || { cat "$work/remove.log" >&2; fail "apt-get remove --purge failed"; }
dpkg-query -W charlm >/dev/null 2>&1 && fail "dpkg still knows charlm after the purge: $(dpkg-query -W -f='${Status}' charlm)"
left=0
while read -r path; do
  # Folders the package shares with others (/usr/bin, /usr/share/man/man1) stay; its files, and folders of its own, go.
  if [ -e "$path" ] && { [ ! -d "$path" ] || [[ "$path" == */charlm || "$path" == */charlm/* ]]; }; then
    fail "left behind after the purge: $path"
    left=$((left + 1))
  fi
done < "$work/files"
[ -e /usr/bin/charlm ] && fail "/usr/bin/charlm is still there"
echo "test_apt_install: $(wc -l < "$work/files") paths installed, $left left behind after apt-get remove --purge"

if [ "$failures" -gt 0 ]; then
  echo "test_apt_install: $failures check(s) failed" >&2
  exit 1
fi
echo "test_apt_install: passed"
