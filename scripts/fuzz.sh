#!/usr/bin/env bash
# Runs the hostile-input fuzz targets of tests/hostile.rs (mutation fuzzing with proptest,
# seeded from generated inputs and tests/corpus/) for longer than CI does, and prints the
# executions and time of each. A failure prints proptest's minimal failing input: add it to
# tests/corpus/make_corpus.py (or drop the file into tests/corpus/<target>/) so that
# corpus_replays keeps it as a regression test.
#   scripts/fuzz.sh [CASES]       (default 20000 per target)
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-20000}"
cargo test --release --test hostile --no-run
for target in image request spec manifest weights; do
  start=$(date +%s.%N)
  PROPTEST_CASES="$cases" cargo test --release --test hostile -q "fuzz_${target}" -- --exact >/dev/null
  end=$(date +%s.%N)
  awk -v t="$target" -v n="$cases" -v a="$start" -v b="$end" \
    'BEGIN { printf "fuzz %-9s %8d executions in %7.1f s (%.0f/s), no failure\n", t, n, b - a, n / (b - a) }'
done
