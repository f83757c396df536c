#!/usr/bin/env bash
# Build pilot as one fully static binary (musl), the one that goes into Apptainer images.
#   scripts/build-static.sh [TARGET [PROFILE]]
# TARGET: x86_64-unknown-linux-musl (default) or aarch64-unknown-linux-musl; PROFILE: release
# (default) or another cargo profile (tests/aarch64.rs uses dev: same code, a faster build).
# Installs the musl target (rustup) and the C compiler for ring's C parts when missing:
# musl-gcc (Debian's musl-tools) for x86_64, Debian's cross gcc (gcc-aarch64-linux-gnu) for
# aarch64, which also links (Rust's musl target brings its own libc and start files).
# Prints the binary's path (under $CARGO_TARGET_DIR when set).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${1:-x86_64-unknown-linux-musl}"
profile="${2:-release}"
case "$target" in
  x86_64-unknown-linux-musl) cc=musl-gcc; pkg=musl-tools ;;
  aarch64-unknown-linux-musl) cc=aarch64-linux-gnu-gcc; pkg="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
  *) echo "build-static: unsupported target $target" >&2; exit 2 ;;
esac
rustup target list --installed | grep -qx "$target" || rustup target add "$target" >&2
if ! command -v "$cc" >/dev/null || { [ "$cc" != musl-gcc ] && [ ! -e /usr/aarch64-linux-gnu/include/stdint.h ]; }; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $pkg >/dev/null
fi
env_target="$(echo "$target" | tr 'a-z-' 'A-Z_')"
# The cc crate (ring) reads CC_<target>; cargo reads the linker from CARGO_TARGET_<TARGET>_LINKER.
export "CC_${target//-/_}=$cc"
[ "$target" = x86_64-unknown-linux-musl ] || export "CARGO_TARGET_${env_target}_LINKER=$cc"
# The static-pie's relocations packed as RELR (binutils >= 2.38; Rust's own musl is >= 1.2.4,
# whose start-up code applies them): 0.1 MB smaller and still position-independent (ASLR).
flags_var="CARGO_TARGET_${env_target}_RUSTFLAGS"
export "$flags_var=${!flags_var:--C link-arg=-Wl,-z,pack-relative-relocs}"
cargo build --profile "$profile" --locked --target "$target" >&2
dir="$profile"
[ "$profile" = dev ] && dir=debug
bin="${CARGO_TARGET_DIR:-$PWD/target}/$target/$dir/pilot"
# `file`, not ldd: ldd cannot look into a binary of another architecture.
desc="$(file -b "$bin")"
case "$desc" in
  *"statically linked"* | *"static-pie linked"*) ;;
  *) echo "build-static: $bin is not statically linked: $desc" >&2; exit 1 ;;
esac
echo "build-static: $(stat -c %s "$bin") bytes, $(echo "$desc" | cut -d, -f1-2)" >&2
echo "$bin"
