#!/usr/bin/env bash
# Sanitizer passes over the Rust data plane and the addon (docs/sanitizers.md).
#
#   scripts/sanitize.sh asan      AddressSanitizer (+ LeakSanitizer): the Rust tests, then the
#                                 vitest suite and a leak check with the addon built under ASan
#   scripts/sanitize.sh valgrind  the Rust tests under valgrind memcheck
#   scripts/sanitize.sh miri      Miri over the modules with `unsafe` or lock-free code
#
# Each pass builds into a target directory of its own (target/asan, target/valgrind,
# target/miri) with the system allocator instead of jemalloc, which ASan and valgrind cannot
# see into (the core's unit tests always use it; feature `system-alloc` of the core for its
# hot-path test, of the binding crate for the addon), and never touches the release addon
# at the repository root. It exits non-zero on any test failure or sanitizer report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET=x86_64-unknown-linux-gnu
# The Rust tests (core and binding crates) with the system allocator everywhere.
TEST_FEATURES=move-dispatcher/system-alloc

mode=${1:-}
case "$mode" in
  asan | valgrind | miri) ;;
  *)
    echo "usage: $0 asan|valgrind|miri" >&2
    exit 2
    ;;
esac

if [ "$(uname -sm)" != "Linux x86_64" ]; then
  echo "sanitize.sh: Linux x86_64 only (target $TARGET)" >&2
  exit 2
fi

step_start=0
step() {
  step_start=$SECONDS
  echo "== sanitize $mode: $*"
}
step_done() {
  echo "   ($((SECONDS - step_start)) s)"
}

# `-Z` flags need a nightly compiler: the nightly toolchain if rustup has it, else the
# default one with RUSTC_BOOTSTRAP=1.
cargo_z() {
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    cargo +nightly "$@"
  else
    RUSTC_BOOTSTRAP=1 cargo "$@"
  fi
}
rustc_z() {
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    rustc +nightly "$@"
  else
    RUSTC_BOOTSTRAP=1 rustc "$@"
  fi
}

# A shared ASan runtime to preload into Node (rustc links its own only into executables):
# GCC's libasan (Debian libasan8, installed with gcc), else LLVM's (libclang-rt-*-dev).
asan_runtime() {
  if [ -n "${SANITIZE_PRELOAD:-}" ]; then
    echo "$SANITIZE_PRELOAD"
    return
  fi
  local c
  for c in $(gcc -print-file-name=libasan.so 2>/dev/null) /usr/lib/x86_64-linux-gnu/libasan.so.* \
    /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.asan-x86_64.so; do
    if [ -f "$c" ]; then
      readlink -f "$c"
      return
    fi
  done
  return 1
}

# Prints every sanitizer report file under $1 (on exit, so a failing step shows them too).
show_reports() {
  local dir=$1 f
  for f in $(find "$dir" -type f 2>/dev/null | sort); do
    if grep -qE '^==[0-9]+==ERROR: ' "$f"; then
      echo "---- $f" >&2
      cat "$f" >&2
    fi
  done
}

run_asan() {
  local out=target/asan
  local reports=$ROOT/$out/reports
  export CARGO_TARGET_DIR=$out
  export RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address"
  rm -rf "$reports"
  mkdir -p "$reports"
  trap 'show_reports "'"$reports"'"' EXIT
  # Reports go to one file per process (log_path) besides failing that process: a report in
  # a child process whose exit status nobody checks still fails the pass (counted below).
  local opts="detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"

  step "canary (a deliberate heap overflow must be reported)"
  mkdir -p "$out"
  rustc_z -Zsanitizer=address --target "$TARGET" -g -o "$out/canary" scripts/sanitize/canary.rs
  if ASAN_OPTIONS="$opts" "$out/canary" >"$out/canary.log" 2>&1 ||
    ! grep -q 'ERROR: AddressSanitizer: heap-buffer-overflow' "$out/canary.log"; then
    cat "$out/canary.log" >&2
    echo "sanitize.sh: AddressSanitizer did not catch the canary" >&2
    exit 1
  fi
  step_done

  step "Rust tests (cargo test --workspace --features $TEST_FEATURES), LeakSanitizer on"
  ASAN_OPTIONS="$opts:detect_leaks=1:log_path=$reports/rust" \
    cargo_z test --workspace --features "$TEST_FEATURES" --target "$TARGET" --quiet
  step_done

  step "addon (crates/binding, feature system-alloc, debug)"
  cargo_z build -p move-dispatcher-node --lib --features system-alloc --target "$TARGET" --quiet
  local addon=$ROOT/$out/move-dispatcher.asan.node
  cp "$out/$TARGET/debug/libmove_dispatcher_node.so" "$addon"
  local runtime
  if ! runtime=$(asan_runtime); then
    echo "sanitize.sh: no shared ASan runtime (install gcc's libasan8 or libclang-rt-14-dev)" >&2
    exit 1
  fi
  # Every __asan_* symbol the addon needs must exist in the runtime we preload.
  local sym have missing=0
  have=$(nm -D --defined-only "$runtime" | awk '{print $3}')
  for sym in $(nm -D --undefined-only "$addon" | awk '{print $2}' | grep '^__asan_'); do
    if ! grep -qx "$sym" <<<"$have"; then
      echo "sanitize.sh: $runtime lacks $sym" >&2
      missing=1
    fi
  done
  [ "$missing" = 0 ] || exit 1
  echo "   $addon, runtime $runtime"
  step_done

  step "vitest with the ASan addon (LeakSanitizer off: vitest kills its forks)"
  # The config hands the addon, the runtime and ASAN_OPTIONS to vitest's forks only.
  SANITIZE_ADDON=$addon SANITIZE_PRELOAD=$runtime \
    SANITIZE_ASAN_OPTIONS="$opts:detect_leaks=0:log_path=$reports/node" \
    npx vitest run --config scripts/sanitize/vitest.config.mts
  step_done

  step "leak check (LeakSanitizer, node scripts/sanitize/leak-check.cjs)"
  if [ ! -f dist/index.js ]; then
    npm run build:ts
  fi
  local cycles=20
  LEAK_CHECK_CYCLES=$cycles NAPI_RS_NATIVE_LIBRARY_PATH=$addon LD_PRELOAD=$runtime \
    ASAN_OPTIONS="$opts:detect_leaks=1:log_path=$reports/leak" \
    LSAN_OPTIONS="suppressions=$ROOT/scripts/sanitize/lsan.supp:print_suppressions=1" \
    node --expose-gc scripts/sanitize/leak-check.cjs
  # No suppression covers the dispatcher's own allocations: any leak per dispatcher or per
  # room is a report (counted below), 20 times over.
  step_done

  local errors
  errors=$({ grep -lE '^==[0-9]+==ERROR: ' $(find "$reports" -type f) /dev/null || true; } | wc -l)
  if [ "$errors" != 0 ]; then
    echo "sanitize.sh: $errors AddressSanitizer report(s) in $reports" >&2
    exit 1
  fi
  echo "== sanitize asan: 0 reports (total $SECONDS s)"
}

run_valgrind() {
  command -v valgrind >/dev/null || {
    echo "sanitize.sh: valgrind not installed (Debian: apt-get install valgrind)" >&2
    exit 1
  }
  local out=target/valgrind
  export CARGO_TARGET_DIR=$out
  step "canary (memcheck must report the read past a heap block)"
  mkdir -p "$out"
  rustc -g -o "$out/canary" scripts/sanitize/canary.rs
  if valgrind --error-exitcode=99 "$out/canary" >"$out/canary.log" 2>&1 ||
    ! grep -q 'Invalid read of size 1' "$out/canary.log"; then
    cat "$out/canary.log" >&2
    echo "sanitize.sh: valgrind did not catch the canary" >&2
    exit 1
  fi
  step_done
  step "build the Rust tests (--features $TEST_FEATURES)"
  local bins
  bins=$(cargo test --workspace --features "$TEST_FEATURES" --no-run \
    --message-format=json --quiet |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.split("\n")){if(!l)continue;const m=JSON.parse(l);if(m.reason==="compiler-artifact"&&m.executable&&m.profile.test)console.log(m.executable)}})')
  step_done
  local bin
  for bin in $bins; do
    # 2 M moves through SHA-256 take ~14 min under memcheck (clean, docs/sanitizers.md):
    # only with SANITIZE_VALGRIND_FULL=1.
    if [[ "$(basename "$bin")" == hot_path_allocations-* ]] && [ -z "${SANITIZE_VALGRIND_FULL:-}" ]; then
      echo "== sanitize valgrind: skipped $(basename "$bin") (SANITIZE_VALGRIND_FULL=1 runs it)"
      continue
    fi
    step "valgrind $(basename "$bin")"
    # Errors (invalid reads/writes, uninitialised values, bad frees) and definite leaks fail.
    # Skipped: a timing test (7 dispatches within 1 ms at 1000/s) that memcheck's ~50x
    # slowdown cannot meet; it tests no memory.
    valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
      --errors-for-leak-kinds=definite --show-leak-kinds=definite --quiet \
      "$bin" --test-threads=2 --skip core::tests::rate_limit_allows_the_burst_then_refills
    step_done
  done
  echo "== sanitize valgrind: 0 errors"
}

run_miri() {
  if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup component add --toolchain nightly miri rust-src
  fi
  export CARGO_TARGET_DIR=target/miri
  # Every module with `unsafe` (arena, inbox, alloc's GlobalAlloc) or lock-free code
  # (arena, latency), and auth's hand-rolled HMAC; tests whose bulk is arithmetic run with
  # smaller counts under cfg(miri). Miri checks data races, Stacked Borrows and weak-memory
  # effects; the threaded tests run again under several schedules (seeds).
  step "Miri: arena inbox alloc auth window frame, latency (threaded and small tests)"
  cargo +nightly miri test -p move-dispatcher --lib -- \
    arena:: inbox:: alloc:: auth:: window::tests::in_order frame::tests::check \
    latency::tests::concurrent latency::tests::reset latency::tests::empty
  step_done
  step "Miri: shard hand-offs on the loop that ships (tests/shard_handoff.rs: shard::drive, arena, sleep/wake, inbox, outbox, failure)"
  cargo +nightly miri test -p move-dispatcher --test shard_handoff
  step_done
  local seeds=${MIRI_SEEDS:-8}
  step "Miri: the threaded tests again under $seeds schedules (-Zmiri-many-seeds)"
  MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-many-seeds=0..$seeds" \
    cargo +nightly miri test -p move-dispatcher --lib -- \
    arena::tests::threads inbox::tests::worker latency::tests::concurrent
  MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-many-seeds=0..$seeds" \
    cargo +nightly miri test -p move-dispatcher --test shard_handoff
  step_done
  echo "== sanitize miri: no undefined behaviour found"
}

"run_$mode"
