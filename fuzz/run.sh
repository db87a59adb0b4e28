#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for N seconds, one at a time, then replays the
# saved corpus and regression inputs; prints executions and results per target.
#
#   fuzz/run.sh [--seconds N] [--runs N] [--targets frame,stream,window,dispatch,ws]
#               [--sanitizer none|address] [--codegen-units N] [--no-build]
#               [--no-trace-compares] [--corpus-only] [--keep-going]
#   npm run fuzz -- --seconds 30
#
# --seconds N: per target (default 60); --runs N: stop a target after N executions;
# --codegen-units: 1 (default) runs ~25% faster, 16 builds in about half the time (CI).
# --no-trace-compares: build without comparison tracing (a separate build directory); the
# dispatch target then runs ~1.6x faster. Its inputs are operation scripts whose frames the
# driver builds and signs itself, so there are few magic values for CMP tracing to solve:
# the long dispatch runs use it (see README.md).
#
# The targets are built with plain `cargo +nightly build` and the flags cargo-fuzz 0.13
# passes (sancov inline 8-bit counters, pc table, trace-compares, `--cfg fuzzing`), so no
# cargo-fuzz install is needed; `cargo fuzz run <target>` works on the same crate too.
# Debug assertions and overflow checks are on for move-dispatcher only (fuzz/Cargo.toml's
# release profile): the crate's internal invariants are checked, the dependencies run at
# full speed.
#
# Per target: new inputs go to fuzz/work/<target>/ (kept between local runs, ignored by git),
# crashes to fuzz/artifacts/<target>/, the log to fuzz/logs/<target>.log. The committed seed
# corpus fuzz/corpus/<target>/ and fuzz/regressions/<target>/ are read, never written.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
FUZZ_DIR=$(pwd)

SECS=60
TARGETS="frame stream window dispatch ws"
SAN=none
CORPUS_ONLY=0
KEEP_GOING=0
RUNS=-1
CGU=1
BUILD=1
TRACE_CMP=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS="$2"; shift 2 ;;
    --seconds=*) SECS="${1#*=}"; shift ;;
    --targets) TARGETS="${2//,/ }"; shift 2 ;;
    --targets=*) TARGETS="${1#*=}"; TARGETS="${TARGETS//,/ }"; shift ;;
    --sanitizer) SAN="$2"; shift 2 ;;
    --sanitizer=*) SAN="${1#*=}"; shift ;;
    --runs) RUNS="$2"; shift 2 ;;
    --runs=*) RUNS="${1#*=}"; shift ;;
    --codegen-units) CGU="$2"; shift 2 ;;
    --codegen-units=*) CGU="${1#*=}"; shift ;;
    --no-build) BUILD=0; shift ;;
    --no-trace-compares) TRACE_CMP=0; shift ;;
    --corpus-only) CORPUS_ONLY=1; shift ;;
    --keep-going) KEEP_GOING=1; shift ;;
    -h|--help) sed -n '2,26p' "$FUZZ_DIR/run.sh"; exit 0 ;;
    *) echo "fuzz/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$SAN" in none|address) ;; *) echo "fuzz/run.sh: --sanitizer none|address" >&2; exit 2 ;; esac

# Per-target libFuzzer options: input size limits keep executions short (see README.md).
max_len() {
  case "$1" in
    frame) echo 512 ;;
    stream) echo 1024 ;;
    window) echo 64 ;;
    dispatch) echo 4096 ;;
    *) echo 4096 ;;
  esac
}

export PATH="$HOME/.cargo/bin:$PATH"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
if ! cargo "+$TOOLCHAIN" --version >/dev/null 2>&1; then
  echo "== installing the $TOOLCHAIN toolchain (needed for -Cpasses=sancov-module and -Z flags)"
  rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
HOST=$(rustc "+$TOOLCHAIN" -vV | sed -n 's/^host: //p')

RUSTFLAGS_FUZZ="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
--cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
-Ccodegen-units=$CGU"
CMP_SUFFIX=
if [ "$TRACE_CMP" = 1 ]; then
  RUSTFLAGS_FUZZ="$RUSTFLAGS_FUZZ -Cllvm-args=-sanitizer-coverage-trace-compares"
else
  CMP_SUFFIX=-nocmp
fi
if [ "$SAN" = address ]; then
  RUSTFLAGS_FUZZ="$RUSTFLAGS_FUZZ -Zsanitizer=address -Cllvm-args=-sanitizer-coverage-stack-depth"
fi

TARGET_DIR="$FUZZ_DIR/target/$SAN-cgu$CGU$CMP_SUFFIX"
if [ "$BUILD" = 1 ]; then
  echo "== build ($TOOLCHAIN, sanitizer $SAN, codegen units $CGU, trace-compares $TRACE_CMP)"
  t0=$(date +%s)
  # --target: RUSTFLAGS then apply to the fuzzed code only, not to build scripts.
  RUSTFLAGS="$RUSTFLAGS_FUZZ" cargo "+$TOOLCHAIN" build --release \
    --manifest-path "$FUZZ_DIR/Cargo.toml" --target "$HOST" --target-dir "$TARGET_DIR" --bins
  echo "   built in $(( $(date +%s) - t0 )) s"
fi
BIN_DIR="$TARGET_DIR/$HOST/release"

mkdir -p logs
status=0
summary=()
for t in $TARGETS; do
  bin="$BIN_DIR/$t"
  [ -x "$bin" ] || { echo "fuzz/run.sh: no target $t" >&2; exit 2; }
  mkdir -p "work/$t" "artifacts/$t" "corpus/$t"
  log="logs/$t.log"
  : > "$log"
  result=ok
  execs=0; rate=0; cov=-; ft=-; corp=-
  if [ "$CORPUS_ONLY" = 0 ] && [ "$SECS" -gt 0 ]; then
    echo "== fuzz $t for ${SECS} s"
    dirs=("work/$t" "corpus/$t")
    [ -d "regressions/$t" ] && dirs+=("regressions/$t")
    # One process, one worker (the machine is shared): -workers/-jobs left at their default.
    if ! "$bin" "${dirs[@]}" -max_total_time="$SECS" -runs="$RUNS" -max_len="$(max_len "$t")" \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" -rss_limit_mb=4096 \
        >>"$log" 2>&1; then
      result=FAIL
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    done_line=$(grep -E '^#[0-9]+.*(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 || true)
    cov=$(echo "$done_line" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$done_line" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$done_line" | sed -n 's/.* corp: \([^ ]*\).*/\1/p')
  fi
  # The saved corpus and the regression inputs, each executed once.
  replay=(corpus/"$t")
  [ -d "regressions/$t" ] && replay+=("regressions/$t")
  n=$(find "${replay[@]}" -type f | wc -l)
  echo "== replay $n saved inputs of $t"
  if ! "$bin" -runs=0 -max_len=65536 "${replay[@]}" >>"$log" 2>&1; then
    result=FAIL
  fi
  if [ "$result" != ok ]; then
    status=1
    echo "   $t FAILED; see fuzz/$log and fuzz/artifacts/$t/:"
    grep -E "panicked at|assertion|ERROR: AddressSanitizer|Test unit written" "$log" | head -8 | sed 's/^/   /'
  fi
  summary+=("$(printf '%-9s %-6s %12s %8s %6s %7s %12s %6s' "$t" "$result" "${execs:-0}" "${rate:-0}" "${cov:--}" "${ft:--}" "${corp:--}" "$n")")
  if [ "$result" != ok ] && [ "$KEEP_GOING" = 0 ]; then
    break
  fi
done

echo
echo "== fuzz summary (${SECS} s per target, sanitizer $SAN, $(date -u +%Y-%m-%dT%H:%MZ))"
printf '%-9s %-6s %12s %8s %6s %7s %12s %6s\n' target result executions exec/s cov ft corpus saved
for line in "${summary[@]}"; do echo "$line"; done
exit $status
