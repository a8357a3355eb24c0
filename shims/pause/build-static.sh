#!/bin/sh
# Builds the statically linked, size-optimised berth-pause and prints its path.
#
# The flags are given for this package only: with an explicit --target,
# RUSTFLAGS reach the target crates but not host build scripts, and the output
# lands in its own directory (target/x86_64-unknown-linux-gnu/release/), so no
# other package's build or cache is touched and no .cargo/config.toml is
# needed. The opt-level override lives in the workspace Cargo.toml; panic and
# the no_std switch cannot be set per package there, so they ride along here.
#   --cfg berth_pause_static   no_std entry point (see src/main.rs)
#   +crt-static, relocation-model=static   a plain static executable
#   strip=symbols              the profile's strip does not reach this build
#   -lgcc_eh -lgcc             unwinder symbols static glibc refers to, which
#                              std would otherwise bring
set -eu
cd "$(dirname "$0")/../.."
TARGET=x86_64-unknown-linux-gnu
RUSTFLAGS="--cfg berth_pause_static -C panic=abort -C target-feature=+crt-static \
-C relocation-model=static -C strip=symbols -C link-arg=-lgcc_eh -C link-arg=-lgcc" \
	cargo build -p berth-pause --release --target "$TARGET" "$@" >&2
echo "target/$TARGET/release/berth-pause"
