#!/usr/bin/env bash
# Soak test of the Restore service (not run in CI): a real `noiseda serve --role restore` on
# loopback restores the six demo photos over and over with 8 requests in flight for DURATION
# seconds (default 600), sampling the server's resident memory every 10 s. Prints the samples,
# the request count and errors, and writes soak-rss.csv into the work folder.
#   scripts/soak.sh [DURATION_SECONDS] [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-600}"
work="${2:-$(mktemp -d)}"
bin="${NOISEDA_BIN:-target/release/noiseda}"
[ -x "$bin" ] || cargo build --release
mkdir -p "$work/clean"
cp data/demo/*.png "$work/clean/"
cat > "$work/tiny.toml" <<TOML
name = "soak"
steps = 5
[restorer]
preset = "unet-t"
[data]
patch = 48
batch = 2
[data.synthetic]
clean = "$work/clean"
degradation = { kind = "awgn", sigma = [5, 30] }
TOML
"$bin" train --config "$work/tiny.toml" --out "$work/run" >/dev/null 2>&1
mkdir -p "$work/models"
rm -rf "$work/models/soak" && cp -r "$work/run/model" "$work/models/soak"
"$bin" serve --role restore --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --data-dir "$work/data" --model-dir "$work/models" > "$work/serve.out" 2> "$work/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening "$work/serve.out" 2>/dev/null && break; sleep 0.2; done
addr=$(awk '{print $5}' "$work/serve.out" | tr -d ,)
rss() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$pid/status"; }
echo "seconds,rss_mib,requests,errors" > "$work/soak-rss.csv"
start=$(date +%s)
requests=0
errors=0
next_sample=0
while :; do
  now=$(( $(date +%s) - start ))
  if [ "$now" -ge "$next_sample" ]; then
    echo "$now,$(rss),$requests,$errors" | tee -a "$work/soak-rss.csv"
    next_sample=$(( next_sample + 10 ))
  fi
  [ "$now" -ge "$duration" ] && break
  if "$bin" restore --server "$addr" --concurrency 8 "$work/clean" "$work/out" >/dev/null 2>>"$work/client.log"; then
    requests=$(( requests + 6 ))
  else
    errors=$(( errors + 1 ))
  fi
done
echo "soak: ${duration} s, $requests images restored, $errors failed batches; RSS (MiB) first/max/last:" \
  "$(awk -F, 'NR==2 {f=$2} NR>1 {if ($2>m) m=$2; l=$2} END {print f " / " m " / " l}' "$work/soak-rss.csv")"
