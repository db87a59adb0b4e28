#!/usr/bin/env bash
# Fails when a shared object needs a newer glibc than the floor: the highest GLIBC_x.y
# symbol version it imports must be <= the floor.
#
#   scripts/check-glibc-floor.sh move-dispatcher.linux-x64-gnu.node 2.17
set -euo pipefail
file="${1:?usage: scripts/check-glibc-floor.sh <file.node> <floor, e.g. 2.17>}"
floor="${2:?usage: scripts/check-glibc-floor.sh <file.node> <floor, e.g. 2.17>}"
# Imported (undefined) dynamic symbols only; readelf works for any target architecture.
needed=$(readelf --dyn-syms --wide "$file" | awk '$7 == "UND"' | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if [ -z "$needed" ]; then
  echo "check-glibc-floor: $file imports no versioned glibc symbol" >&2
  exit 1
fi
highest=$(printf '%s\n%s\n' "$needed" "$floor" | sort -V | tail -1)
if [ "$highest" != "$floor" ]; then
  echo "check-glibc-floor: $file needs glibc $needed, above the $floor floor:" >&2
  readelf --dyn-syms --wide "$file" | awk '$7 == "UND"' | grep "GLIBC_$needed" >&2 || true
  exit 1
fi
echo "check-glibc-floor: $file needs glibc $needed (floor $floor): ok"
