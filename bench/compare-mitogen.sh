#!/usr/bin/env bash
# compare-mitogen.sh - benchmark Mitogen 0.3.54 and spore side by side.
#
# Usage: bench/compare-mitogen.sh [--build] [--quick] [--out DIR] [--strict]
#                                  [--ssh HOST [--ssh-config FILE]]
#   --build    run `cargo build --release -p spore-cli` even if $SPORE_BIN exists
#              (it is always built when missing)
#   --quick    fewer runs on both sides (mitogen_bench.py --quick, spore bench --quick)
#   --ssh HOST also compare bootstrap over ssh to HOST ([USER@]HOST[:PORT], a
#              `Host` of the ssh config): `spore bench --target ssh:HOST
#              --same-libraries` beside Mitogen's router.ssh() (which needs
#              python3 on HOST); the ssh_* rows. The test bed's hosts work:
#              --ssh spore-h2 --ssh-config /var/lib/spore-testbed/ssh_config
#   --ssh-config FILE  ssh config file for both (ssh -F)
#   --out DIR  write mitogen.json, spore.json and table.txt into DIR
#              (without it, both raw JSON objects are printed after the table)
#   --strict   exit 1 if any target is missed or could not be measured
#
# It creates a throwaway venv (removed on exit), pip-installs mitogen==0.3.54
# from PyPI into it (the only network traffic), runs bench/mitogen_bench.py
# --json there, runs "$SPORE_BIN" bench --json, and prints a table:
# metric | mitogen median (min-max) | spore median (min-max) | ratio | target.
# ratio = how many times better spore is: mitogen/spore for times and sizes,
# spore/mitogen for throughputs and rates. Works from any cwd.
#
# Environment:
#   SPORE_BIN           spore binary (default: <repo>/target/release/spore)
#   SPORE_BENCH_ARGS    extra arguments for `spore bench --json` (word-split)
#   MITOGEN_BENCH_ARGS  extra arguments for mitogen_bench.py (word-split)
#   PYTHON              interpreter used to create the venv (default: python3)
# Developer aids (skip the real runs, e.g. to test the table logic):
#   SPORE_JSON_FILE=f   use f as spore's JSON; spore is neither built nor run
#   MITOGEN_JSON_FILE=f use f as Mitogen's JSON; no venv, no pip, no run
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH_DIR="$ROOT/bench"
SPORE_BIN="${SPORE_BIN:-$ROOT/target/release/spore}"
PYTHON="${PYTHON:-python3}"
MITOGEN_VERSION=0.3.54

build=0 quick=0 strict=0 out="" ssh_host="" ssh_config=""
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=1 ;;
        --quick) quick=1 ;;
        --ssh) [ $# -ge 2 ] || { echo "--ssh needs a host" >&2; exit 2; }
               ssh_host="$2"; shift ;;
        --ssh-config) [ $# -ge 2 ] || { echo "--ssh-config needs a file" >&2; exit 2; }
               ssh_config="$2"; shift ;;
        --strict) strict=1 ;;
        --out) [ $# -ge 2 ] || { echo "--out needs a directory" >&2; exit 2; }
               out="$2"; shift ;;
        --out=*) out="${1#--out=}" ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/compare-mitogen.XXXXXX")"
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

# --- Mitogen
MITOGEN_JSON="$TMP/mitogen.json"
if [ -n "${MITOGEN_JSON_FILE:-}" ]; then
    cp "$MITOGEN_JSON_FILE" "$MITOGEN_JSON"
else
    echo ">> creating venv with mitogen==$MITOGEN_VERSION" >&2
    "$PYTHON" -m venv "$TMP/venv"
    PIP_NO_INPUT=1 "$TMP/venv/bin/python" -m pip install --quiet \
        --disable-pip-version-check "mitogen==$MITOGEN_VERSION" >&2
    mitogen_args=(--json)
    [ "$quick" = 1 ] && mitogen_args+=(--quick)
    if [ -n "$ssh_host" ]; then
        # [USER@]HOST[:PORT] -> --ssh-user/--ssh-host/--ssh-port
        h="$ssh_host"
        case "$h" in *@*) mitogen_args+=(--ssh-user "${h%%@*}"); h="${h#*@}" ;; esac
        case "$h" in *:*) mitogen_args+=(--ssh-port "${h##*:}"); h="${h%:*}" ;; esac
        mitogen_args+=(--ssh-host "$h")
        [ -n "$ssh_config" ] && mitogen_args+=(--ssh-config "$ssh_config")
    fi
    # shellcheck disable=SC2206
    mitogen_args+=(${MITOGEN_BENCH_ARGS:-})
    echo ">> mitogen_bench.py ${mitogen_args[*]}" >&2
    "$TMP/venv/bin/python" "$BENCH_DIR/mitogen_bench.py" "${mitogen_args[@]}" \
        > "$MITOGEN_JSON"
fi

# --- spore
SPORE_JSON="$TMP/spore.json"
if [ -n "${SPORE_JSON_FILE:-}" ]; then
    cp "$SPORE_JSON_FILE" "$SPORE_JSON"
else
    # shellcheck disable=SC2206
    spore_args=(bench --json ${SPORE_BENCH_ARGS:-})
    [ "$quick" = 1 ] && spore_args+=(--quick)
    if [ -n "$ssh_host" ]; then
        spore_args+=(--target "ssh:$ssh_host" --same-libraries)
        [ -n "$ssh_config" ] && spore_args+=(--ssh-config "$ssh_config")
    fi
    echo ">> $SPORE_BIN ${spore_args[*]}" >&2
    "$SPORE_BIN" "${spore_args[@]}" > "$SPORE_JSON"
fi

# --- table (bench_table.py: stdlib python only)
TABLE="$TMP/table.txt"
set +e
"$PYTHON" -B - "$BENCH_DIR" "$MITOGEN_JSON" "$SPORE_JSON" > "$TABLE" <<'PY'
import sys

sys.path.insert(0, sys.argv[1])
import bench_table as t  # noqa: E402

# key, unit, lower is better, target (how many times better spore must be)
ROWS = [
    ('bootstrap_local_ms', 'ms', True, t.Ratio(40, '>=40x')),
    ('bootstrap_bytes', 'B', True, None),
    ('rtt_us', 'us', True, t.Ratio(20, '>=20x')),
    ('throughput_1mib_mbps', 'MB/s', False, None),
    ('throughput_64mib_mbps', 'MB/s', False, t.Ratio(10, '>=10x')),
    ('calls_per_s', '1/s', False, t.Ratio(50, '>=50x')),
    ('rtt_depth3_us', 'us', True, t.Ratio(15, '>=15x')),
    ('throughput_1mib_depth3_mbps', 'MB/s', False, t.Ratio(10, '>=10x')),
    ('start_100_local_s', 's', True, t.Ratio(30, '>=30x')),
    ('child_rss_kib', 'KiB', True, t.Ratio(5, '<=1/5')),
    ('parent_death_exit_ms', 'ms', True, None),
    # Bootstrap over ssh (with --ssh): faster than Mitogen's ssh() on every row.
    ('ssh_first_ms', 'ms', True, t.Ratio(1, '>1x')),
    ('ssh_repeat_ms', 'ms', True, t.Ratio(1, '>1x')),
    ('ssh_first_cm_ms', 'ms', True, t.Ratio(1, '>1x')),
    ('ssh_repeat_cm_ms', 'ms', True, t.Ratio(1, '>1x')),
    ('ssh_first_bytes', 'B', True, None),
    ('ssh_repeat_bytes', 'B', True, None),
    ('ssh_bare_ms', 'ms', True, None),
    ('ssh_bare_cm_ms', 'ms', True, None),
]
# No --ssh: no ssh rows.
SSH_KEYS = {r[0] for r in ROWS if r[0].startswith('ssh_')}
# spore's own targets: (key, limit, label); met when spore's value <= limit.
LIMITS = [
    ('ssh_repeat_bytes', 2048, 'repeat contact <= 2 KB'),
    ('ssh_repeat_cm_vs_bare', 1.3, 'through ControlMaster <= 1.3x bare ssh (new connection)'),
    ('ssh_repeat_cm_vs_bare_cm', 1.3, 'through ControlMaster <= 1.3x bare ssh through it too'),
]
t.main('mitogen', ROWS, sys.argv[2], sys.argv[3], limits=LIMITS, spore_only=SSH_KEYS)
PY
table_rc=$?
set -e
cat "$TABLE"
if [ "$table_rc" != 0 ] && [ "$table_rc" != 3 ]; then
    exit "$table_rc"
fi

if [ -n "$out" ]; then
    cp "$MITOGEN_JSON" "$out/mitogen.json"
    cp "$SPORE_JSON" "$out/spore.json"
    cp "$TABLE" "$out/table.txt"
    echo "raw JSON and table written to $out" >&2
else
    echo
    echo "raw mitogen JSON:"
    printf '%s\n' "$(cat "$MITOGEN_JSON")"
    echo "raw spore JSON:"
    printf '%s\n' "$(cat "$SPORE_JSON")"
fi

if [ "$strict" = 1 ] && [ "$table_rc" = 3 ]; then
    exit 1
fi
exit 0
