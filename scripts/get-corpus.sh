#!/usr/bin/env bash
# Writes the default corpus, data/kjv.txt: the King James Bible from Debian's bible-kjv package, verse references removed.
# Usage: scripts/get-corpus.sh
set -euo pipefail
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,3p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "get-corpus.sh: takes no arguments; see scripts/get-corpus.sh --help" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
if ! command -v bible >/dev/null; then
  echo "get-corpus: the 'bible' program is missing; run scripts/setup.sh --demo or apt-get install bible-kjv" >&2
  exit 1
fi
mkdir -p data
# Each line is "Book1:1 text"; keep the text.
bible -f 'Genesis1:1-Revelation22:21' | sed 's/^[^ ]* //' > data/kjv.txt.tmp
mv data/kjv.txt.tmp data/kjv.txt
echo "get-corpus: wrote data/kjv.txt ($(wc -c < data/kjv.txt) bytes)" >&2
