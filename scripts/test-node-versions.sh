#!/usr/bin/env bash
# Runs the vitest suite on other Node.js majors than the system's (default: 22 and 24),
# with the addon and dist/ built here: N-API is ABI-stable, so the one binary must pass on
# every supported Node.js. The binaries come from the npm packages node-linux-<arch>@<major>
# (bin/node), fetched once into a cache.
#
#   scripts/test-node-versions.sh                      # whole suite on 22 and 24
#   scripts/test-node-versions.sh __test__/loader.test.ts __test__/conformance.test.ts
#   NODE_MAJORS="24" scripts/test-node-versions.sh     # one major
#
# Prints one closing line per major ("node v22.x: N passed, N failed") and exits non-zero
# if any run failed. Needs the build first (npm run build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

majors="${NODE_MAJORS:-22 24}"
cache="${NODE_VERSIONS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/move-dispatcher/node}"
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "test-node-versions: no node-linux package for $(uname -m)" >&2; exit 1 ;;
esac

summary=()
status=0
for major in $majors; do
  dir="$cache/$arch-$major"
  if [ ! -x "$dir/bin/node" ]; then
    mkdir -p "$dir"
    tgz=$(cd "$dir" && npm pack "node-linux-$arch@$major" --silent --no-fund --no-audit | tail -1)
    tar -xzf "$dir/$tgz" -C "$dir" --strip-components=1 package/bin/node
    rm -f "$dir/$tgz"
  fi
  node_bin="$dir/bin/node"
  version=$("$node_bin" --version)
  echo "== vitest on node $version${*:+ ($*)}"
  report=".vitest/results-node$major.json"
  rc=0
  # On PATH first too, so anything a test spawns as `node` runs on the same version.
  PATH="$dir/bin:$PATH" "$node_bin" node_modules/vitest/vitest.mjs run --reporter=default --reporter=json --outputFile.json="$report" "$@" || rc=$?
  line=$(node scripts/test-summary.cjs "$report" 2>/dev/null || true)
  [ -n "$line" ] || line="vitest: no report"
  summary+=("node $version: ${line#vitest: }")
  [ "$rc" -eq 0 ] || status=1
done
printf '%s\n' "${summary[@]}"
exit "$status"
