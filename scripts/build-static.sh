#!/usr/bin/env bash
# Build pilot as one fully static binary (musl), the one that goes into Apptainer images.
# Installs the musl target (rustup) and musl-gcc (Debian's musl-tools, for ring's C parts)
# when missing. Prints the binary's path (under $CARGO_TARGET_DIR when set).
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
if ! command -v musl-gcc >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq musl-tools >/dev/null
fi
# The static-pie's relocations packed as RELR (binutils >= 2.38; Rust's own musl is >= 1.2.4,
# whose start-up code applies them): 0.1 MB smaller and still position-independent (ASLR).
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="${CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS:--C link-arg=-Wl,-z,pack-relative-relocs}"
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --locked --target "$target" >&2
bin="${CARGO_TARGET_DIR:-$PWD/target}/$target/release/pilot"
if ldd "$bin" >/dev/null 2>&1 && ! ldd "$bin" 2>&1 | grep -q "statically linked"; then
  echo "build-static: $bin is dynamically linked:" >&2
  ldd "$bin" >&2
  exit 1
fi
echo "build-static: $(stat -c %s "$bin") bytes, $(file -b "$bin" | cut -d, -f1-2)" >&2
echo "$bin"
