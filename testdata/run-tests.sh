#!/usr/bin/env bash
# Runs the v2x test suite: installs the reference tools it needs (Debian),
# then the fast tier (cargo test) and, when V2X_CORPUS names the shared
# corpus, the real-world corpus check.
# Usage: testdata/run-tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v qemu-io >/dev/null || need+=(qemu-utils)
command -v python3 >/dev/null || need+=(python3)
command -v bzip2 >/dev/null || need+=(bzip2)
command -v cc >/dev/null || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

echo "== fast tier: cargo test --workspace"
env -u V2X_CORPUS cargo test --workspace --locked

if [ -n "${V2X_CORPUS:-}" ]; then
  echo "== corpus check against $V2X_CORPUS"
  cargo test --locked -p v2x-formats --test corpus -- --nocapture
fi
