#!/usr/bin/env bash
# One-step setup on Debian 12: installs the build and test tools, Rust (via
# rustup if cargo is missing), builds v2x, and runs a demo conversion that
# qemu-img then checks.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  build-essential ca-certificates curl qemu-utils python3 bzip2 time bc
if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
cargo build --release --locked
demo=$(mktemp -d)
echo "== demo: a sparse 64 MiB disk with scattered data, as qcow2 with a backing file"
python3 testdata/gen-pattern.py "$demo/disk.raw" $((64 * 1024 * 1024))
qemu-img convert -f raw -O qcow2 "$demo/disk.raw" "$demo/base.qcow2"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$demo/guest.qcow2"
./target/release/v2x info "$demo/guest.qcow2"
./target/release/v2x convert -p "$demo/guest.qcow2" "$demo/converted.qcow2"
qemu-img check "$demo/converted.qcow2"
qemu-img compare "$demo/guest.qcow2" "$demo/converted.qcow2"
echo "demo files in $demo"
