#!/usr/bin/env bash
# Release build of the addon for one target, as CI's build matrix runs it:
#
#   scripts/build-target.sh x86_64-unknown-linux-gnu     # on an x64 Linux host
#   scripts/build-target.sh aarch64-unknown-linux-gnu    # on an x64 Linux host (cross)
#   scripts/build-target.sh x86_64-unknown-linux-musl    # natively, inside Alpine (x64 host)
#   scripts/build-target.sh aarch64-unknown-linux-musl   # natively, inside Alpine (arm64 host)
#
# glibc targets link against napi-rs's cross toolchain (gcc with a glibc 2.17 sysroot,
# `--use-napi-cross`), so the binary runs on any glibc >= 2.17 whatever the build host has;
# the result is checked with scripts/check-glibc-floor.sh. musl targets are built on Alpine
# itself (jemalloc's configure then runs natively). Writes move-dispatcher.<abi>.node,
# binding.js and binding.d.ts to the repository root.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${1:?usage: scripts/build-target.sh <target triple>}"

case "$target" in
  aarch64-*)
    # jemalloc must not bake in 4 KiB pages: arm64 hosts run 4K, 16K and 64K kernels.
    export JEMALLOC_SYS_WITH_LG_PAGE=16 ;;
esac

flags=(--platform --release --manifest-path crates/binding/Cargo.toml -o . --js binding.js --dts binding.d.ts --target "$target")
case "$target" in
  *-linux-gnu)
    bash scripts/napi-cross-toolchain.sh "$target"
    flags+=(--use-napi-cross)
    ;;
  *-linux-musl)
    # A cdylib cannot link the C runtime statically.
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=-crt-static"
    ;;
  *) echo "build-target: unsupported target $target" >&2; exit 1 ;;
esac

npx napi build "${flags[@]}"

abi=$(node -e "
  const [arch, , os, env] = process.argv[1].split('-');
  console.log([os, { x86_64: 'x64', aarch64: 'arm64' }[arch], env].join('-'));" "$target")
file="move-dispatcher.$abi.node"
ls -l "$file"
case "$target" in
  *-linux-gnu) bash scripts/check-glibc-floor.sh "$file" 2.17 ;;
esac
