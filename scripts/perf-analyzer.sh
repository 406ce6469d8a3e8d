#!/usr/bin/env bash
# Run NVIDIA Triton's load generator `perf_analyzer` on this Debian 12 host
# without installing anything system-wide.
#
#   scripts/perf-analyzer.sh [perf_analyzer args...]
#   e.g. throughput and p50/p99 latency (usec) at concurrency 1..8 as CSV
#   (rows come sorted by throughput; `sort -t, -k1,1n` orders them):
#     scripts/perf-analyzer.sh -m unet -u 127.0.0.1:50051 -i grpc \
#       --shape INPUT:256,256,3 -b 1 --concurrency-range 1:8:1 \
#       --measurement-interval 5000 --stability-percentage 20 -f /tmp/pa.csv
#
# Why: the PyPI `perf-analyzer` package (0.1.0) is an empty placeholder, and
# tritonclient >= 2.61 no longer ships the binary. The last wheel that does is
# tritonclient 2.60.0 (manylinux1_x86_64, data/bin/perf_analyzer, a C++
# binary with gRPC/HTTP clients linked in). Despite its manylinux1 tag it is
# built against glibc 2.38 and GCC >= 13.2 (needs GLIBC_2.38, GLIBCXX_3.4.32),
# while Debian 12 has glibc 2.36 / libstdc++ from GCC 12. So this script:
#
#   1. fetches that wheel (pip download, sha256-pinned) and extracts only the
#      binary (the wheel's Python part is not needed and is not installed, so
#      the system tritonclient/protobuf are left alone);
#   2. fetches libc6, libstdc++6 and libgcc-s1 from Debian trixie (13):
#      InRelease (signature checked with gpgv when the Debian keyring is
#      present) -> main/binary-amd64/Packages.xz (sha256 from InRelease) ->
#      the .debs (sha256 from Packages), unpacked with `dpkg-deb -x`;
#   3. runs perf_analyzer through trixie's dynamic loader with those libraries
#      first on the search path. libssl.so.3, libcrypto.so.3 and libz.so.1
#      still come from the host (bookworm's libssl3/zlib1g are fine).
#
# Everything lives in ${NOISEDA_PA_CACHE:-${XDG_CACHE_HOME:-~/.cache}/noiseda/perf-analyzer};
# steps already done are skipped, so later runs start immediately and work
# offline. Delete that directory to refetch (e.g. after a trixie point
# release, which is only needed if you want newer libraries).
#
# Overrides (environment): NOISEDA_PA_CACHE, NOISEDA_PA_DEBIAN_MIRROR
# (default http://deb.debian.org/debian), NOISEDA_PA_SUITE (default trixie),
# PYTHON (default python3, used for `-m pip`).
#
# What perf_analyzer needs from noiseda (gRPC, -i grpc; there is no HTTP
# endpoint): ModelMetadata, ModelConfig (max_batch_size > 0, so --shape omits
# the batch dim: --shape INPUT:H,W,3 is required because dims are -1),
# ServerMetadata, then ModelInfer (or ModelStreamInfer with --streaming).
# ModelStatistics is called before/after every measurement window only if
# ServerMetadata.extensions lists "statistics"; it then has to work, report
# the model under a decimal version string (perf_analyzer std::stoll()s it:
# a hex version aborts the run or silently yields zero server stats), with
# queue.count rising and compute_input/infer/output counts equal.
set -euo pipefail

TC_VERSION=2.60.0
TC_WHEEL="tritonclient-${TC_VERSION}-py3-none-manylinux1_x86_64.whl"
TC_SHA256=778ef1561092be6b3ef65a4b0f2f3c641263703ac0f43ddf4a172c5a9bfb8cd7
TC_URL="https://files.pythonhosted.org/packages/28/8a/392acad4a1bdb4bf7d79178ed4622090a0568ed5c22e8960ddd56abd7600/${TC_WHEEL}"
DEBS=(libc6 libgcc-s1 libstdc++6)

CACHE="${NOISEDA_PA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/noiseda/perf-analyzer}"
MIRROR="${NOISEDA_PA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${NOISEDA_PA_SUITE:-trixie}"
PYTHON="${PYTHON:-python3}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

BIN_DIR="$CACHE/tritonclient-$TC_VERSION"
BIN="$BIN_DIR/perf_analyzer"
ROOT="$CACHE/$SUITE-root"
LIBDIR="$ROOT/usr/lib/x86_64-linux-gnu"
LOADER="$LIBDIR/ld-linux-x86-64.so.2"

TMPS=()
cleanup() { [ ${#TMPS[@]} -eq 0 ] || rm -rf "${TMPS[@]}"; }
trap cleanup EXIT # not run after the final exec; temp dirs are gone by then

die() { echo "perf-analyzer.sh: error: $*" >&2; exit 1; }
say() { echo "perf-analyzer.sh: $*" >&2; }

[ "$(uname -m)" = x86_64 ] || die "only x86_64 is supported (found $(uname -m))"

fetch() { # URL DEST
  curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1" \
    || die "download failed: $1 (network, mirror or a superseded file; set NOISEDA_PA_DEBIAN_MIRROR or retry)"
}

check_sha256() { # FILE SHA256 WHAT
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  [ "$got" = "$2" ] || die "sha256 mismatch for $3: expected $2, got $got"
}

# Rename a finished temp dir into place; if another run won the race, keep theirs.
install_dir() { # TMP DEST
  if ! mv -T "$1" "$2" 2>/dev/null; then
    [ -e "$2" ] || die "cannot move $1 to $2"
    rm -rf "$1"
  fi
}

setup_binary() {
  [ -x "$BIN" ] && return 0
  command -v unzip >/dev/null || command -v "$PYTHON" >/dev/null || die "need unzip or $PYTHON to unpack the wheel"
  say "fetching perf_analyzer from tritonclient $TC_VERSION ($TC_WHEEL, ~14 MB)"
  mkdir -p "$CACHE"
  local tmp
  tmp="$(mktemp -d "$CACHE/.bin.XXXXXX")"
  TMPS+=("$tmp")
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    echo "tritonclient==$TC_VERSION --hash=sha256:$TC_SHA256" >"$tmp/req.txt"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
      --platform manylinux1_x86_64 --python-version 3 --implementation py \
      --require-hashes -r "$tmp/req.txt" -d "$tmp" \
      || die "pip download of tritonclient==$TC_VERSION ($TC_WHEEL) failed"
  else
    say "no pip for $PYTHON; downloading the wheel with curl"
    fetch "$TC_URL" "$tmp/$TC_WHEEL"
  fi
  [ -f "$tmp/$TC_WHEEL" ] || die "pip did not produce $TC_WHEEL"
  check_sha256 "$tmp/$TC_WHEEL" "$TC_SHA256" "$TC_WHEEL"
  local member="tritonclient-$TC_VERSION.data/data/bin/perf_analyzer"
  mkdir -p "$tmp/out"
  if command -v unzip >/dev/null; then
    unzip -q -p "$tmp/$TC_WHEEL" "$member" >"$tmp/out/perf_analyzer" || die "cannot extract $member"
  else
    "$PYTHON" -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
      "$tmp/$TC_WHEEL" "$member" >"$tmp/out/perf_analyzer" || die "cannot extract $member"
  fi
  chmod 0755 "$tmp/out/perf_analyzer"
  install_dir "$tmp/out" "$BIN_DIR"
  rm -rf "$tmp"
}

setup_libs() {
  [ -f "$ROOT/.complete" ] && [ -x "$LOADER" ] && return 0
  command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
  command -v xz >/dev/null || die "xz not found (apt-get install xz-utils)"
  say "fetching ${DEBS[*]} from Debian $SUITE ($MIRROR)"
  mkdir -p "$CACHE"
  local tmp
  tmp="$(mktemp -d "$CACHE/.libs.XXXXXX")"
  TMPS+=("$tmp")
  fetch "$MIRROR/dists/$SUITE/InRelease" "$tmp/InRelease"
  if command -v gpgv >/dev/null && [ -r "$KEYRING" ]; then
    gpgv --quiet --keyring "$KEYRING" "$tmp/InRelease" 2>/dev/null \
      || die "bad or unknown signature on $MIRROR/dists/$SUITE/InRelease (keyring $KEYRING)"
  else
    say "warning: gpgv or $KEYRING missing; not checking the InRelease signature"
  fi
  local idx=main/binary-amd64/Packages.xz idx_sha
  idx_sha="$(awk -v f="$idx" '/^SHA256:/{s=1;next} /^[^ ]/{s=0} s && $3==f {print $1; exit}' "$tmp/InRelease")"
  [ -n "$idx_sha" ] || die "$idx not listed in $SUITE InRelease"
  fetch "$MIRROR/dists/$SUITE/$idx" "$tmp/Packages.xz"
  check_sha256 "$tmp/Packages.xz" "$idx_sha" "$SUITE/$idx"
  xz -dc "$tmp/Packages.xz" >"$tmp/Packages"

  mkdir -p "$tmp/root"
  local pkg line version file sha
  for pkg in "${DEBS[@]}"; do
    line="$(awk -v want="$pkg" '
      /^Package:/  {p=$2} /^Version:/ {v=$2} /^Filename:/ {f=$2} /^SHA256:/ {s=$2}
      /^$/ { if (p==want) {print v, f, s; exit} p="" }' "$tmp/Packages")"
    [ -n "$line" ] || die "package $pkg not found in $SUITE $idx"
    read -r version file sha <<<"$line"
    say "  $pkg $version ($MIRROR/$file)"
    fetch "$MIRROR/$file" "$tmp/$pkg.deb"
    check_sha256 "$tmp/$pkg.deb" "$sha" "$file"
    dpkg-deb -x "$tmp/$pkg.deb" "$tmp/root" || die "dpkg-deb -x failed for $file"
    echo "$pkg $version $MIRROR/$file" >>"$tmp/root/.complete"
  done
  [ -x "$tmp/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ] \
    || die "no dynamic loader in the unpacked libc6"
  rm -rf "$ROOT" # an incomplete earlier attempt
  install_dir "$tmp/root" "$ROOT"
  rm -rf "$tmp"
}

setup_binary
setup_libs

if [ ! -f "$CACHE/.checked" ]; then
  missing="$("$LOADER" --library-path "$LIBDIR" --list "$BIN" 2>&1 | grep 'not found' || true)"
  [ -z "$missing" ] || die "perf_analyzer needs libraries the host lacks (on Debian: apt-get install libssl3 zlib1g):
$missing"
  touch "$CACHE/.checked"
fi

# glibc would otherwise load the host's (2.36) iconv modules.
export GCONV_PATH="$LIBDIR/gconv"
exec "$LOADER" --library-path "$LIBDIR" --argv0 perf_analyzer "$BIN" "$@"
