"""The side-by-side table of compare-mitogen.sh and compare-otp.sh.

Standard library only: it runs under any python3, outside the benchmark venvs.
Each script passes its own rows and targets to main():

    import bench_table as t
    rows = [
        # key, unit, lower is better, target (or None)
        ('rtt_us', 'us', True, t.Ratio(20, '>=20x')),     # otherbase/spore >= 20
        ('spawn_us', 'us', True, t.AtMost(1, '<=1')),     # spore's value <= 1
        ('msgs_per_s', '1/s', False, t.AtLeast(1e7, '>=1e7')),
    ]
    t.main('mitogen', rows, sys.argv[1], sys.argv[2])

The table: metric | unit | <baseline> median (min-max) | spore median
(min-max) | ratio | target, where ratio = how many times better spore is
(baseline/spore for times and sizes, spore/baseline for throughputs and
rates). Keys only one side reports follow the known rows (numbers as rows,
strings as notes under the table). Exit status: 0 when every target is met,
3 when one is missed or could not be measured, 1 on unreadable input.
"""

import json
import sys

META = {'tool', 'version'}
SUFFIXES_LOWER = ('_ms', '_us', '_ns', '_s', '_bytes', '_kib', '_mib', '_b')
SUFFIXES_HIGHER = ('_mbps', '_per_s', '_ops', '_rate')


class Ratio(object):
    """Met when spore is at least `value` times better than the baseline."""

    def __init__(self, value, label):
        self.value, self.label = value, label

    def check(self, base, spore, r):
        return None if r is None else r >= self.value


class AtMost(object):
    """Met when spore's own value is <= `limit` (the baseline is not needed)."""

    def __init__(self, limit, label):
        self.limit, self.label = limit, label

    def check(self, base, spore, r):
        return spore <= self.limit if num(spore) else None


class AtLeast(object):
    """Met when spore's own value is >= `limit`."""

    def __init__(self, limit, label):
        self.limit, self.label = limit, label

    def check(self, base, spore, r):
        return spore >= self.limit if num(spore) else None


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


def ratio(bv, sv, lower):
    if not (num(bv) and num(sv)):
        return None
    if lower:
        return bv / sv if sv > 0 else (float('inf') if bv > 0 else None)
    return sv / bv if bv > 0 else (float('inf') if sv > 0 else None)


def fmt_ratio(r):
    if r is None:
        return '-'
    if r == float('inf'):
        return 'inf'
    return ('%.1fx' if r >= 10 else '%.2fx') % r


def render(name, b, s, rows, limits=(), spore_only=(), footer=None):
    """Lines of the table and the number of targets (met, missed).

    name        the baseline's name (column heading, header line)
    b, s        the baseline's and spore's JSON objects
    rows        (key, unit, lower is better, target or None)
    limits      (key, limit, label): lines under the table, met when spore's
                value <= limit (for keys that are not rows)
    spore_only  keys whose row is left out when spore did not report them
    footer      the line explaining ratio (a default one otherwise)
    """
    table = [('metric', 'unit', '%s median (min-max)' % name,
              'spore median (min-max)', 'ratio', 'target')]
    met = missed = 0
    known_keys = set()
    for key, unit, lower, target in rows:
        known_keys.add(key)
        if key in spore_only and key not in s:
            continue
        r = ratio(b.get(key), s.get(key), lower)
        if target is None:
            tcell = ''
        else:
            ok = target.check(b.get(key), s.get(key), r)
            if ok is None:
                tcell = '%s n/a' % target.label
                missed += 1
            elif ok:
                tcell = '%s met' % target.label
                met += 1
            else:
                tcell = '%s MISSED' % target.label
                missed += 1
        table.append((key, unit, cell(b, key), cell(s, key), fmt_ratio(r), tcell))

    # Keys only one side has (e.g. spore's bootstrap_firststage_ms): numbers
    # are shown as rows, compared only when both sides report them; strings
    # (notes, descriptions) are listed under the table.
    notes = []
    seen = set()
    for who, d in (('spore', s), (name, b)):
        for key in d:
            if key in known_keys or key in META or is_range_key(key):
                continue
            if isinstance(d[key], str):
                notes.append('%s %s: %s' % (who, key, d[key]))
                continue
            if key in seen:
                continue
            seen.add(key)
            r = None
            if key in b and key in s:
                if key.endswith(SUFFIXES_HIGHER):
                    r = ratio(b[key], s[key], False)
                elif key.endswith(SUFFIXES_LOWER):
                    r = ratio(b[key], s[key], True)
            table.append((key, '', cell(b, key), cell(s, key), fmt_ratio(r), ''))

    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    right = {2, 3, 4}
    out = ['%s %s vs spore %s' % (name, b.get('version', '?'), s.get('version', '?'))]
    for i, row in enumerate(table):
        out.append('  '.join(c.rjust(widths[j]) if j in right else c.ljust(widths[j])
                             for j, c in enumerate(row)).rstrip())
        if i == 0:
            out.append('  '.join('-' * w for w in widths))
    out.append(footer or (
        'ratio = times better spore is (%s/spore for times and sizes, '
        'spore/%s for throughputs and rates)' % (name, name)))
    out.extend(notes)
    for key, limit, label in limits:
        if key not in s:
            continue
        v = s[key]
        ok = num(v) and v <= limit
        out.append('spore %s: %s = %s (%s)' % (label, key, fmt(v), 'met' if ok else 'MISSED'))
        if ok:
            met += 1
        else:
            missed += 1
    out.append('targets: %d met, %d missed or not measured' % (met, missed))
    return out, met, missed


def main(name, rows, base_path, spore_path, **kw):
    """Print the table; exit 3 when a target is missed or not measured."""
    b = load(base_path, name)
    s = load(spore_path, 'spore')
    lines, met, missed = render(name, b, s, rows, **kw)
    print('\n'.join(lines))
    sys.exit(3 if missed else 0)
