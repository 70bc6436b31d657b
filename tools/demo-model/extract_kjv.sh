#!/usr/bin/env bash
# Writes the King James Bible as plain text (Debian's bible-kjv-text, read with
# the `bible` program of bible-kjv) to OUT (default out/demo-model/kjv.txt),
# for train.py. Run here: the GPU machine has neither apt nor the network.
set -euo pipefail
out=${1:-out/demo-model/kjv.txt}
command -v bible >/dev/null || { echo "extract_kjv.sh: 'bible' not found; apt-get install bible-kjv (scripts/setup does)" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
# -l0: one verse per line, no wrapping. Genesis 1:1 through Revelation 22:21.
bible -l0 gen1:1-rev22:21 >"$out"
echo "extract_kjv.sh: $(wc -c <"$out") bytes in $out"
