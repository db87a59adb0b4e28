#!/usr/bin/env bash
# Makes `napi build --use-napi-cross --target <triple>` work offline from npm's registry.
#
# @napi-rs/cli looks for the toolchain in ~/.napi-rs/cross-toolchain/<v>/<triple>/, where
# <v> is the version of @napi-rs/cross-toolchain, and otherwise runs
# `npm pack @napi-rs/cross-toolchain-<host>-target-<arch>@<v>`. That exact version is not
# always published (with 1.0.5: the x64-target-x86_64 package stops at 1.0.0 and
# x64-target-aarch64 at 1.0.3, so the build fails with ETARGET). This unpacks the exact
# version when it exists, else the newest one, where the CLI looks first. Idempotent.
# Only x64 hosts: the arm64-host packages (@napi-rs/cross-toolchain-arm64-target-*) are
# not published at all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
triple="${1:?usage: scripts/napi-cross-toolchain.sh <target triple>}"

version=$(node -p "require('@napi-rs/cross-toolchain/package.json').version")
dest="$HOME/.napi-rs/cross-toolchain/$version/$triple"
if [ -f "$dest/package.json" ]; then
  echo "napi-cross-toolchain: $dest is ready"
  exit 0
fi
case "$(uname -m)" in
  x86_64) host=x64 ;;
  aarch64 | arm64) host=arm64 ;;
  *) echo "napi-cross-toolchain: no toolchain for a $(uname -m) host" >&2; exit 1 ;;
esac
pkg="@napi-rs/cross-toolchain-$host-target-${triple%%-*}"
spec="$pkg@$version"
npm view "$spec" version >/dev/null 2>&1 || spec="$pkg@latest"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tgz=$(cd "$tmp" && npm pack "$spec" --silent | tail -1)
tar -xzf "$tmp/$tgz" -C "$tmp"
mkdir -p "$dest"
tar -xJf "$tmp/package/$triple.tar.xz" -C "$dest"
echo "napi-cross-toolchain: $spec unpacked into $dest"
