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

# --- table (stdlib python only)
TABLE="$TMP/table.txt"
set +e
"$PYTHON" - "$MITOGEN_JSON" "$SPORE_JSON" > "$TABLE" <<'PY'
import json
import sys


def load(path, who):
    with open(path) as f:
        text = f.read()
    # Tolerate log lines before/after the object: take the last JSON line.
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith('{'):
            try:
                return json.loads(line)
            except ValueError:
                pass
    try:
        return json.loads(text)
    except ValueError:
        sys.exit('%s: no JSON object in its output:\n%s' % (who, text[:2000]))


m = load(sys.argv[1], 'mitogen')
s = load(sys.argv[2], 'spore')

# key -> (unit, lower is better, target ratio or None, target label)
KNOWN = [
    ('bootstrap_local_ms', 'ms', True, 40, '>=40x'),
    ('bootstrap_bytes', 'B', True, None, ''),
    ('rtt_us', 'us', True, 20, '>=20x'),
    ('throughput_1mib_mbps', 'MB/s', False, None, ''),
    ('throughput_64mib_mbps', 'MB/s', False, 10, '>=10x'),
    ('calls_per_s', '1/s', False, 50, '>=50x'),
    ('rtt_depth3_us', 'us', True, 15, '>=15x'),
    ('throughput_1mib_depth3_mbps', 'MB/s', False, 10, '>=10x'),
    ('start_100_local_s', 's', True, 30, '>=30x'),
    ('child_rss_kib', 'KiB', True, 5, '<=1/5'),
    ('parent_death_exit_ms', 'ms', True, None, ''),
    # Bootstrap over ssh (with --ssh): faster than Mitogen's ssh() on every row.
    ('ssh_first_ms', 'ms', True, 1, '>1x'),
    ('ssh_repeat_ms', 'ms', True, 1, '>1x'),
    ('ssh_first_cm_ms', 'ms', True, 1, '>1x'),
    ('ssh_repeat_cm_ms', 'ms', True, 1, '>1x'),
    ('ssh_first_bytes', 'B', True, None, ''),
    ('ssh_repeat_bytes', 'B', True, None, ''),
    ('ssh_bare_ms', 'ms', True, None, ''),
    ('ssh_bare_cm_ms', 'ms', True, None, ''),
]
SSH_KEYS = {k for k in [r[0] for r in KNOWN] if k.startswith('ssh_')}
# spore's own targets: (key, limit, label); met when spore's value <= limit.
LIMITS = [
    ('ssh_repeat_bytes', 2048, 'repeat contact <= 2 KB'),
    ('ssh_repeat_cm_vs_bare', 1.3, 'through ControlMaster <= 1.3x bare ssh (new connection)'),
    ('ssh_repeat_cm_vs_bare_cm', 1.3, 'through ControlMaster <= 1.3x bare ssh through it too'),
]
META = {'tool', 'version'}
SUFFIXES_LOWER = ('_ms', '_us', '_ns', '_s', '_bytes', '_kib', '_mib', '_b')
SUFFIXES_HIGHER = ('_mbps', '_per_s', '_ops', '_rate')


def is_range_key(k):
    return k.endswith('_min') or k.endswith('_max')


def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt(v):
    if not num(v):
        return '-' if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    a = abs(v)
    if a >= 100:
        return '%.0f' % v
    if a >= 10:
        return '%.1f' % v
    if a >= 0.1:
        return '%.2f' % v
    return '%.3g' % v


def cell(d, k):
    if k not in d:
        return '-'
    v = d[k]
    if v is None:
        return '-'
    lo, hi = d.get(k + '_min'), d.get(k + '_max')
    if num(lo) and num(hi):
        return '%s (%s-%s)' % (fmt(v), fmt(lo), fmt(hi))
    return fmt(v)


def ratio(mv, sv, lower):
    if not (num(mv) and num(sv)):
        return None
    if lower:
        return mv / sv if sv > 0 else (float('inf') if mv > 0 else None)
    return sv / mv if mv > 0 else (float('inf') if sv > 0 else None)


def fmt_ratio(r):
    if r is None:
        return '-'
    if r == float('inf'):
        return 'inf'
    return ('%.1fx' if r >= 10 else '%.2fx') % r


rows = [('metric', 'unit', 'mitogen median (min-max)',
         'spore median (min-max)', 'ratio', 'target')]
met = missed = 0
known_keys = set()
for key, unit, lower, target, label in KNOWN:
    known_keys.add(key)
    if key in SSH_KEYS and key not in s:
        continue  # no --ssh: no ssh rows
    r = ratio(m.get(key), s.get(key), lower)
    if target is None:
        tcell = ''
    elif r is None:
        tcell = '%s n/a' % label
        missed += 1
    elif r >= target:
        tcell = '%s met' % label
        met += 1
    else:
        tcell = '%s MISSED' % label
        missed += 1
    rows.append((key, unit, cell(m, key), cell(s, key), fmt_ratio(r), tcell))

# Keys only one side has (e.g. spore's bootstrap_firststage_ms): shown, and
# compared only when both sides report them.
extra = [k for k in list(s) + list(m)
         if k not in known_keys and k not in META and not is_range_key(k)]
seen = set()
for key in extra:
    if key in seen:
        continue
    seen.add(key)
    r = None
    if key in m and key in s:
        if key.endswith(SUFFIXES_HIGHER):
            r = ratio(m[key], s[key], False)
        elif key.endswith(SUFFIXES_LOWER):
            r = ratio(m[key], s[key], True)
    rows.append((key, '', cell(m, key), cell(s, key), fmt_ratio(r), ''))

widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
right = {2, 3, 4}
print('mitogen %s vs spore %s' % (m.get('version', '?'), s.get('version', '?')))
for i, row in enumerate(rows):
    print('  '.join(c.rjust(widths[j]) if j in right else c.ljust(widths[j])
                    for j, c in enumerate(row)).rstrip())
    if i == 0:
        print('  '.join('-' * w for w in widths))
print('ratio = times better spore is (mitogen/spore for times and sizes, '
      'spore/mitogen for throughputs and rates)')
for key, limit, label in LIMITS:
    if key not in s:
        continue
    v = s[key]
    ok = num(v) and v <= limit
    print('spore %s: %s = %s (%s)' % (label, key, fmt(v), 'met' if ok else 'MISSED'))
    if ok:
        met += 1
    else:
        missed += 1
print('targets: %d met, %d missed or not measured' % (met, missed))
sys.exit(3 if missed else 0)
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
