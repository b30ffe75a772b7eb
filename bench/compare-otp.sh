#!/usr/bin/env bash
# compare-otp.sh - benchmark otpylib 0.5.18 and spore's processes side by side.
#
# Usage: bench/compare-otp.sh [--build] [--quick] [--out DIR] [--strict]
#   --build    run `cargo build --release -p spore-cli` even if $SPORE_BIN exists
#              (it is always built when missing)
#   --quick    fewer runs on both sides (otp_bench.py --quick, which
#              extrapolates the million-process row from 100 000, and
#              spore bench processes --quick)
#   --out DIR  write otpylib.json, spore.json and table.txt into DIR
#              (without it, both raw JSON objects are printed after the table)
#   --strict   exit 1 if any target is missed or could not be measured
#
# It creates a throwaway venv (removed on exit), pip-installs otpylib==0.5.18
# from PyPI into it (the only network traffic), runs bench/otp_bench.py --json
# there (about 3 minutes; --quick about 20 s), runs "$SPORE_BIN" bench
# processes --json, and prints a table:
# metric | unit | otpylib median (min-max) | spore median (min-max) | ratio | target.
# ratio = how many times better spore is: otpylib/spore for times and sizes,
# spore/otpylib for rates. Works from any cwd.
#
# The targets are absolute limits on spore's own value on this machine:
#   spawn_us <= 1                    bytes_per_process <= 1024
#   spawn_1m_s <= 1.5                rss_1m_mib <= 1024
#   pingpong_local_us <= 0.5         throughput_local_msgs_per_s >= 10 000 000
#   crash_to_down_us <= 3            crash_to_restart_us <= 5
#   pingpong_remote_us <= 20         call_local_us: none (ratio only)
#
# Environment:
#   SPORE_BIN         spore binary (default: <repo>/target/release/spore)
#   SPORE_BENCH_ARGS  extra arguments for `spore bench processes --json` (word-split)
#   OTP_BENCH_ARGS    extra arguments for otp_bench.py (word-split)
#   PYTHON            interpreter used to create the venv (default: python3)
# Developer aids (skip the real runs, e.g. to test the table logic):
#   SPORE_JSON_FILE=f use f as spore's JSON; spore is neither built nor run
#   OTP_JSON_FILE=f   use f as otpylib's JSON; no venv, no pip, no run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="$ROOT/bench"
SPORE_BIN="${SPORE_BIN:-$ROOT/target/release/spore}"
PYTHON="${PYTHON:-python3}"
OTPYLIB_VERSION=0.5.18

build=0 quick=0 strict=0 out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=1 ;;
        --quick) quick=1 ;;
        --strict) strict=1 ;;
        --out) [ $# -ge 2 ] || { echo "--out needs a directory" >&2; exit 2; }
               out="$2"; shift ;;
        --out=*) out="${1#--out=}" ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/compare-otp.XXXXXX")"
# shellcheck disable=SC2317  # (run by the EXIT trap)
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

if [ -n "$out" ]; then
    mkdir -p "$out"
    out="$(cd "$out" && pwd)"
fi

# --- spore: build first so compilation does not disturb the measurements.
if [ -z "${SPORE_JSON_FILE:-}" ]; then
    if [ "$build" = 1 ] || [ ! -x "$SPORE_BIN" ]; then
        echo ">> cargo build --release -p spore-cli" >&2
        (cd "$ROOT" && cargo build --release -p spore-cli)
    fi
    if [ ! -x "$SPORE_BIN" ]; then
        echo "spore binary not found at $SPORE_BIN" >&2
        exit 1
    fi
fi

# --- otpylib
OTP_JSON="$TMP/otpylib.json"
if [ -n "${OTP_JSON_FILE:-}" ]; then
    cp "$OTP_JSON_FILE" "$OTP_JSON"
else
    echo ">> creating venv with otpylib==$OTPYLIB_VERSION" >&2
    "$PYTHON" -m venv "$TMP/venv"
    PIP_NO_INPUT=1 "$TMP/venv/bin/python" -m pip install --quiet \
        --disable-pip-version-check "otpylib==$OTPYLIB_VERSION" >&2
    otp_args=(--json)
    [ "$quick" = 1 ] && otp_args+=(--quick)
    # shellcheck disable=SC2206
    otp_args+=(${OTP_BENCH_ARGS:-})
    echo ">> otp_bench.py ${otp_args[*]}" >&2
    "$TMP/venv/bin/python" -B "$BENCH_DIR/otp_bench.py" "${otp_args[@]}" > "$OTP_JSON"
fi

# --- spore
SPORE_JSON="$TMP/spore.json"
if [ -n "${SPORE_JSON_FILE:-}" ]; then
    cp "$SPORE_JSON_FILE" "$SPORE_JSON"
else
    # shellcheck disable=SC2206
    spore_args=(bench processes --json ${SPORE_BENCH_ARGS:-})
    [ "$quick" = 1 ] && spore_args+=(--quick)
    echo ">> $SPORE_BIN ${spore_args[*]}" >&2
    "$SPORE_BIN" "${spore_args[@]}" > "$SPORE_JSON"
fi

# --- table (bench_table.py: stdlib python only)
TABLE="$TMP/table.txt"
set +e
"$PYTHON" -B - "$BENCH_DIR" "$OTP_JSON" "$SPORE_JSON" > "$TABLE" <<'PY'
import sys

sys.path.insert(0, sys.argv[1])
import bench_table as t  # noqa: E402

# key, unit, lower is better, target: a limit on spore's own value
ROWS = [
    ('spawn_us', 'us', True, t.AtMost(1, '<=1')),
    ('bytes_per_process', 'B', True, t.AtMost(1024, '<=1024')),
    ('spawn_1m_s', 's', True, t.AtMost(1.5, '<=1.5')),
    ('rss_1m_mib', 'MiB', True, t.AtMost(1024, '<=1024')),
    ('pingpong_local_us', 'us', True, t.AtMost(0.5, '<=0.5')),
    ('throughput_local_msgs_per_s', 'msgs/s', False, t.AtLeast(10e6, '>=10M')),
    ('call_local_us', 'us', True, None),
    ('crash_to_down_us', 'us', True, t.AtMost(3, '<=3')),
    ('crash_to_restart_us', 'us', True, t.AtMost(5, '<=5')),
    ('pingpong_remote_us', 'us', True, t.AtMost(20, '<=20')),
]
t.main('otpylib', ROWS, sys.argv[2], sys.argv[3], footer=(
    'ratio = times better spore is (otpylib/spore for times and sizes, '
    "spore/otpylib for rates); targets are limits on spore's own value"))
PY
table_rc=$?
set -e
cat "$TABLE"
if [ "$table_rc" != 0 ] && [ "$table_rc" != 3 ]; then
    exit "$table_rc"
fi

if [ -n "$out" ]; then
    cp "$OTP_JSON" "$out/otpylib.json"
    cp "$SPORE_JSON" "$out/spore.json"
    cp "$TABLE" "$out/table.txt"
    echo "raw JSON and table written to $out" >&2
else
    echo
    echo "raw otpylib JSON:"
    printf '%s\n' "$(cat "$OTP_JSON")"
    echo "raw spore JSON:"
    printf '%s\n' "$(cat "$SPORE_JSON")"
fi

if [ "$strict" = 1 ] && [ "$table_rc" = 3 ]; then
    exit 1
fi
exit 0
