#!/usr/bin/env bash
# The Debian package on a fresh Debian 12: debootstraps a minimal bookworm (--variant=minbase) into a scratch
# directory, adds what a user's machine has for man pages and bash completion (man-db, bash-completion), and runs
# tests/test_apt_install.sh inside it (chroot): `apt-get install ./charlm_*.deb` with its dependencies from the
# Debian mirror, charlm --version, a short training and a sample, man, the completions, then
# `apt-get remove --purge charlm` leaving none of its files. So the package's dependencies are proven complete
# on a system that has none of this machine's development packages. Run by hand, as root (debootstrap, chroot,
# mount; it installs debootstrap where it is missing); a few minutes and some 200 MB from the mirror (debootstrap
# keeps its downloads in /var/cache/charlm-debootstrap for the next run).
# Usage: tests/test_apt_install_chroot.sh [--keep] [PACKAGE.deb]   (--keep leaves the chroot in place;
#        without a package, scripts/package.sh builds one)
set -uo pipefail
cd "$(dirname "$0")/.."
keep=no
if [ "${1:-}" = --keep ]; then keep=yes; shift; fi
case "${1:-}" in
  -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  -*) echo "test_apt_install_chroot: unknown option $1; see --help" >&2; exit 2 ;;
esac
say() { echo "test_apt_install_chroot: $*"; }
[ "$(id -u)" -eq 0 ] || { say "run it as root (debootstrap, chroot and mount need it)" >&2; exit 2; }
started=$SECONDS

package="${1:-}"
if [ -z "$package" ]; then package="$(scripts/package.sh | tail -1)" || { say "scripts/package.sh failed" >&2; exit 1; }; fi
[ -f "$package" ] || { say "no package at $package" >&2; exit 2; }
package="$(realpath "$package")"

export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap"
  apt-get install -y -qq debootstrap > /dev/null 2>&1 || { say "apt-get install debootstrap failed" >&2; exit 1; }
fi
# The mirror this machine's apt uses (deb822 or one-line sources), else Debian's own.
mirror="$(sed -nE 's/^URIs: *(http[^ ]*\/debian)\/?$/\1/p; s/^deb +(\[[^]]*\] +)?(http[^ ]*\/debian)\/? +bookworm .*/\2/p' \
  /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | head -1)"
mirror="${mirror:-http://deb.debian.org/debian}"

work="$(mktemp -d /var/tmp/charlm-apt-chroot.XXXXXX)"
root="$work/root"
cleanup() {
  local still_mounted=no
  for mounted in "$root/proc" "$root/dev"; do
    if mountpoint -q "$mounted"; then umount "$mounted" || still_mounted=yes; fi
  done
  if [ "$keep" = yes ]; then
    say "the chroot stays in $root"
  elif [ "$still_mounted" = yes ]; then
    say "left $work in place: something under it is still mounted" >&2
  else
    rm -rf --one-file-system "$work"  # never into a mount that survived
  fi
}
trap cleanup EXIT

say "debootstrap --variant=minbase bookworm from $mirror"
mkdir -p /var/cache/charlm-debootstrap
if ! debootstrap --variant=minbase --cache-dir=/var/cache/charlm-debootstrap bookworm "$root" "$mirror" > "$work/debootstrap.log" 2>&1; then
  tail -20 "$work/debootstrap.log" >&2
  say "debootstrap failed" >&2
  exit 1
fi
bootstrapped=$SECONDS
# As an installed Debian 12 has it: the release, its updates and the security archive.
security="$(sed -nE 's/^URIs: *(http[^ ]*\/debian-security)\/?$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)"
cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${security:-http://deb.debian.org/debian-security} bookworm-security main
EOF
cp /etc/resolv.conf "$root/etc/resolv.conf"
mount -t proc proc "$root/proc"
[ -c "$root/dev/null" ] && [ -c "$root/dev/urandom" ] || mount --bind /dev "$root/dev"

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
say "$(in_root dpkg-query -W | wc -l) packages in the minimal bookworm, $(du -sm --one-file-system "$root" | cut -f1) MB"
if ! in_root sh -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends man-db bash-completion' > "$work/tools.log" 2>&1; then
  tail -20 "$work/tools.log" >&2
  say "installing man-db and bash-completion in the chroot failed" >&2
  exit 1
fi
cp "$package" "$root/tmp/"
cp tests/test_apt_install.sh "$root/tmp/"
deb="/tmp/$(basename "$package")"
# What apt-get brings along for the package on a bare system: its dependencies, resolved from the mirror.
pulled="$(in_root apt-get install -s "$deb" 2>/dev/null | grep -c '^Inst ')"
say "apt-get install $(basename "$package") installs $pulled packages (charlm and its dependencies)"
in_root bash /tmp/test_apt_install.sh "$deb"
status=$?
say "debootstrap took $((bootstrapped - started)) s, the rest $((SECONDS - bootstrapped)) s"
exit $status
