#!/usr/bin/env python3
"""Benchmark Mitogen (tested with mitogen==0.3.54) on local contexts.

The baseline spore is compared against; see compare-mitogen.sh.

Usage:
    python3 bench/mitogen_bench.py [--json] [--quick] [--only a,b,...]
        [--ssh-host HOST [--ssh-config FILE] [--ssh-user U] [--ssh-port P]]

Metrics (every median metric also gets <key>_min and <key>_max):
    bootstrap_local_ms     router.local() until the first no-op call returned
    bootstrap_bytes        bytes handed to one child for that same window: the
                           first-stage program on argv (without the python
                           path) + everything written to the child's stdio
                           socket (compressed core source, then messages)
    ssh_*                  with --ssh-host: router.ssh() until the first no-op
                           call returned, new connection and through a
                           ControlMaster (_cm), beside a bare `ssh HOST true`
                           (ssh_bare_ms, ssh_bare_cm_ms); bytes as above
    rtt_us                 warm no-op call round trip
    throughput_1mib_mbps   call returning 1 MiB of bytes, MB/s (MB = 10^6 B)
    throughput_64mib_mbps  same for 64 MiB
    calls_per_s            10 000 outstanding call_async on one context
    rtt_depth3_us          rtt_us through local(via=local(via=local()))
    throughput_1mib_depth3_mbps  throughput_1mib_mbps through the same chain
    start_100_local_s      start 100 local contexts, each answering one call
    child_rss_kib          VmRSS of an idle child
    parent_death_exit_ms   SIGKILL a master process; time until its child exits

The called functions live in mitogen_funcs.py next to this file; Mitogen
ships that module's source to each child on first use.
"""

import argparse
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import mitogen  # noqa: E402
import mitogen.core  # noqa: E402
import mitogen.master  # noqa: E402
import mitogen.parent  # noqa: E402

import mitogen_funcs  # noqa: E402

MIB = 1024 * 1024
CHILD_MARK = b'(mitogen:'

# Every child pid we learn about, so that none outlives the benchmark.
_child_pids = set()
_masters = []


def now():
    return time.perf_counter()


def summarize(key, values, digits=3):
    """Return {key: median, key_min: ..., key_max: ...}."""
    if not values:
        return {key: None, key + '_min': None, key + '_max': None}
    r = lambda v: round(v, digits)  # noqa: E731
    return {
        key: r(statistics.median(values)),
        key + '_min': r(min(values)),
        key + '_max': r(max(values)),
    }


def log(args, msg):
    if args.verbose:
        sys.stderr.write('[mitogen_bench] %s\n' % msg)
        sys.stderr.flush()


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # state is the field after the ')' closing the comm field
    state = stat[stat.rindex(b')') + 2:stat.rindex(b')') + 3]
    return state not in (b'Z', b'X')


def is_mitogen_child(pid):
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            return CHILD_MARK in f.read()
    except OSError:
        return False


def kill_leftovers():
    for p in _masters:
        if p.poll() is None:
            try:
                p.kill()
            except OSError:
                pass
            try:
                p.wait(5)
            except Exception:
                pass
    for pid in sorted(_child_pids):
        if pid_alive(pid) and is_mitogen_child(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def child_pid(router, ctx):
    """Pid of a directly connected child, without a round trip if possible."""
    try:
        pid = router.stream_by_id(ctx.context_id).conn.proc.pid
    except AttributeError:
        pid = ctx.call(mitogen_funcs.getpid)
    _child_pids.add(pid)
    return pid


def shutdown_all(contexts):
    latches = [c.shutdown() for c in contexts]
    for latch in latches:
        latch.get(timeout=30)


# --------------------------------------------------------------------------
# metrics

def bench_bootstrap(args, router):
    times = []
    for i in range(args.bootstrap_runs):
        t0 = now()
        ctx = router.local()
        ctx.call(mitogen_funcs.noop)
        times.append((now() - t0) * 1e3)
        child_pid(router, ctx)
        shutdown_all([ctx])
        log(args, 'bootstrap %d: %.1f ms' % (i, times[-1]))
    return summarize('bootstrap_local_ms', times)


class ByteCounter(object):
    """While active, counts the bytes Mitogen writes to each stream and
    records the interpreter part of each boot command.

    Mitogen writes everything (the zlib-compressed core source during the
    BootstrapProtocol phase, then framed messages) through
    mitogen.core.Side.write on the connection's stdio stream, so counting
    per stream and picking the new context's stream afterwards is exact.
    The first-stage program travels on argv (for ssh: in the remote
    command); its size is taken from Connection.get_boot_command(),
    without the python path.
    """

    def __enter__(self):
        self.counts = {}
        self.argv_sizes = []
        self._write = mitogen.core.Side.write
        self._boot = mitogen.parent.Connection.get_boot_command
        orig_write, orig_boot, counts = self._write, self._boot, self.counts
        argv_sizes = self.argv_sizes

        def counting_write(side, s):
            n = orig_write(side, s)
            if n:
                counts[id(side.stream)] = counts.get(id(side.stream), 0) + n
            return n

        def recording_boot(conn):
            argv = orig_boot(conn)
            program = argv[len(conn.get_python_argv()):]
            argv_sizes.append(sum(len(a.encode()) + 1 for a in program))
            return argv

        mitogen.core.Side.write = counting_write
        mitogen.parent.Connection.get_boot_command = recording_boot
        return self

    def __exit__(self, *exc):
        mitogen.core.Side.write = self._write
        mitogen.parent.Connection.get_boot_command = self._boot

    def written(self, router, ctx):
        """Bytes written so far to the stream of a directly connected ctx."""
        return self.counts.get(id(router.stream_by_id(ctx.context_id)), 0)

    def argv(self):
        """Size of the last boot command's program part."""
        return self.argv_sizes[-1] if self.argv_sizes else 0


def bench_bootstrap_bytes(args, router):
    """Bytes handed to one local child until its first call returned."""
    marks = {}
    with ByteCounter() as counter:
        ctx = router.local()
        marks['connected'] = counter.written(router, ctx)
        ctx.call(mitogen_funcs.noop)
        marks['first_call'] = counter.written(router, ctx)
        child_pid(router, ctx)
    shutdown_all([ctx])
    argv_bytes = counter.argv()
    detail = {
        'argv_first_stage': argv_bytes,
        'stdio_until_connected': marks['connected'],
        'stdio_for_first_call': marks['first_call'] - marks['connected'],
    }
    return {'bootstrap_bytes': argv_bytes + marks['first_call']}, detail


def ssh_base_args(args):
    """ssh options the bare ssh and Mitogen's ssh() share."""
    a = []
    if args.ssh_config:
        a += ['-F', args.ssh_config]
    return a


def ssh_through(master):
    """ssh options that use the ControlMaster listening at `master`."""
    if not master:
        return []
    return ['-o', 'ControlMaster=no', '-o', 'ControlPath=%s' % master]


def ssh_argv(args, master, options=()):
    argv = ['ssh', '-o', 'BatchMode=yes'] + ssh_base_args(args)
    if args.ssh_port:
        argv += ['-p', str(args.ssh_port)]
    if args.ssh_user:
        argv += ['-l', args.ssh_user]
    return argv + ssh_through(master) + list(options) + ['--', args.ssh_host]


def bare_ssh_ms(args, master):
    t0 = now()
    p = subprocess.run(ssh_argv(args, master) + ['true'],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)
    ms = (now() - t0) * 1e3
    if p.returncode != 0:
        raise RuntimeError('bare ssh %s true failed (%d): %s' % (
            args.ssh_host, p.returncode, p.stderr.decode(errors='replace')))
    return ms


def start_control_master(args, path):
    """ssh -M -N to the host; returns the process once `ssh -O check` works."""
    p = subprocess.Popen(
        ssh_argv(args, None, ['-M', '-N', '-o', 'ControlPath=%s' % path,
                              '-o', 'ControlPersist=no']),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    _masters.append(p)
    deadline = now() + 15
    while True:
        check = subprocess.run(
            ssh_argv(args, None, ['-O', 'check', '-o', 'ControlPath=%s' % path]),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        if check.returncode == 0:
            return p
        if p.poll() is not None:
            raise RuntimeError('ControlMaster ssh to %s exited (%d): %s' % (
                args.ssh_host, p.returncode, p.stderr.read().decode(errors='replace')))
        if now() > deadline:
            raise RuntimeError('ControlMaster ssh to %s not up after 15 s' % args.ssh_host)
        time.sleep(0.02)


def ssh_contact(args, router, master):
    """One router.ssh() until its first no-op call returned: (ms, bytes)."""
    kw = dict(hostname=args.ssh_host, python_path='python3',
              ssh_args=ssh_base_args(args) + ssh_through(master))
    if args.ssh_user:
        kw['username'] = args.ssh_user
    if args.ssh_port:
        kw['port'] = args.ssh_port
    with ByteCounter() as counter:
        t0 = now()
        ctx = router.ssh(**kw)
        ctx.call(mitogen_funcs.noop)
        ms = (now() - t0) * 1e3
        sent = counter.argv() + counter.written(router, ctx)
    shutdown_all([ctx])
    return ms, sent


def bench_ssh(args, router):
    """The ssh_* rows of `spore bench --target`, the same way round.

    Mitogen keeps nothing on the target, so its first and repeat contacts
    are the same procedure, measured at the same places in each round.
    """
    import tempfile
    tmp = tempfile.mkdtemp(prefix='mitogen-bench-cm-')
    path = os.path.join(tmp, 'cm')
    master = start_control_master(args, path)
    keys = ['ssh_bare_ms', 'ssh_bare_cm_ms', 'ssh_first_ms', 'ssh_repeat_ms',
            'ssh_first_cm_ms', 'ssh_repeat_cm_ms']
    v = dict((k, []) for k in keys)
    first_bytes = repeat_bytes = None
    try:
        ssh_contact(args, router, path)  # unmeasured: imports, compression
        for i in range(args.ssh_runs):
            v['ssh_bare_ms'].append(bare_ssh_ms(args, None))
            v['ssh_bare_cm_ms'].append(bare_ssh_ms(args, path))
            for suffix, m in (('', None), ('_cm', path)):
                ms, first_bytes = ssh_contact(args, router, m)
                v['ssh_first%s_ms' % suffix].append(ms)
                ms, repeat_bytes = ssh_contact(args, router, m)
                v['ssh_repeat%s_ms' % suffix].append(ms)
            log(args, 'ssh round %d: %s' % (
                i, dict((k, round(v[k][-1], 1)) for k in keys)))
    finally:
        master.kill()
        master.wait()
        _masters.remove(master)
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    out = {}
    for k in keys:
        out.update(summarize(k, v[k]))
    out['ssh_first_bytes'] = first_bytes
    out['ssh_repeat_bytes'] = repeat_bytes
    med = statistics.median
    out['ssh_repeat_cm_vs_bare_cm'] = round(
        med(v['ssh_repeat_cm_ms']) / med(v['ssh_bare_cm_ms']), 3)
    out['ssh_repeat_cm_vs_bare'] = round(
        med(v['ssh_repeat_cm_ms']) / med(v['ssh_bare_ms']), 3)
    return out


def bench_rtt(args, ctx, key='rtt_us'):
    for _ in range(args.rtt_warmup):
        ctx.call(mitogen_funcs.noop)
    times = []
    call = ctx.call
    fn = mitogen_funcs.noop
    for _ in range(args.rtt_calls):
        t0 = now()
        call(fn)
        times.append((now() - t0) * 1e6)
    return summarize(key, times, 1)


def bench_throughput(args, ctx, size, runs, key):
    ctx.call(mitogen_funcs.blob, size)  # warm: build and cache in child
    rates = []
    for _ in range(runs):
        t0 = now()
        data = ctx.call(mitogen_funcs.blob, size)
        dt = now() - t0
        assert len(data) == size, len(data)
        del data
        rates.append(size / dt / 1e6)
    ctx.call(mitogen_funcs.drop_blobs)
    log(args, '%s: %s' % (key, ['%.1f' % r for r in rates]))
    return summarize(key, rates, 2)


def bench_calls_per_s(args, ctx):
    rates = []
    fn = mitogen_funcs.noop
    for _ in range(args.cps_runs):
        t0 = now()
        recvs = [ctx.call_async(fn) for _ in range(args.cps_calls)]
        for r in recvs:
            r.get().unpickle()
        rates.append(args.cps_calls / (now() - t0))
        log(args, 'calls/s run: %.0f' % rates[-1])
    return summarize('calls_per_s', rates, 1)


def bench_start_n(args, router):
    durations = []
    for _ in range(args.start_runs):
        contexts = []
        try:
            t0 = now()
            if args.start_threads <= 1:
                for _ in range(args.start_count):
                    contexts.append(router.local())
            else:
                lock = threading.Lock()
                remaining = [args.start_count]
                errors = []

                def worker():
                    while True:
                        with lock:
                            if remaining[0] <= 0:
                                return
                            remaining[0] -= 1
                        try:
                            c = router.local()
                        except Exception as e:  # pragma: no cover
                            errors.append(e)
                            return
                        with lock:
                            contexts.append(c)

                threads = [threading.Thread(target=worker)
                           for _ in range(args.start_threads)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                if errors:
                    raise errors[0]
            recvs = [c.call_async(mitogen_funcs.noop) for c in contexts]
            for r in recvs:
                r.get().unpickle()
            durations.append(now() - t0)
            log(args, 'start %d: %.2f s' % (args.start_count, durations[-1]))
        finally:
            for c in contexts:
                child_pid(router, c)
            shutdown_all(contexts)
    return summarize('start_100_local_s', durations, 3)


def read_rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError('no VmRSS for %d' % pid)


def bench_rss(args, router):
    contexts = []
    values = []
    try:
        for _ in range(args.rss_children):
            ctx = router.local()
            contexts.append(ctx)
            ctx.call(mitogen_funcs.noop)
            pid = ctx.call(mitogen_funcs.getpid)
            _child_pids.add(pid)
        time.sleep(0.5)  # let it go idle
        for ctx in contexts:
            values.append(read_rss_kib(ctx.call(mitogen_funcs.getpid)))
    finally:
        shutdown_all(contexts)
    return summarize('child_rss_kib', values, 0)


def bench_parent_death(args):
    """A master process starts one child; SIGKILL the master, time the child.

    pidfd (poll()-able, fires when the child exits) is used when available,
    falling back to polling /proc/<pid>/stat every 0.2 ms.
    """
    times = []
    for i in range(args.death_runs):
        master = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), '--death-master'],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, cwd=HERE,
        )
        _masters.append(master)
        pid = None
        try:
            line = master.stdout.readline()
            if not line:
                raise RuntimeError('death master exited early')
            pid = int(line)
            _child_pids.add(pid)
            time.sleep(0.1)  # let the child settle into its idle loop
            pidfd = None
            if hasattr(os, 'pidfd_open'):
                try:
                    pidfd = os.pidfd_open(pid)
                except OSError:
                    pidfd = None
            t0 = now()
            os.kill(master.pid, signal.SIGKILL)
            if pidfd is not None:
                p = select.poll()
                p.register(pidfd, select.POLLIN)
                if not p.poll(args.death_timeout * 1e3):
                    raise RuntimeError('child %d outlived its master' % pid)
                t1 = now()
                os.close(pidfd)
            else:
                deadline = t0 + args.death_timeout
                while pid_alive(pid):
                    if now() > deadline:
                        raise RuntimeError('child %d outlived its master' % pid)
                    time.sleep(0.0002)
                t1 = now()
            times.append((t1 - t0) * 1e3)
            log(args, 'parent death %d: %.2f ms' % (i, times[-1]))
        finally:
            if master.poll() is None:
                master.kill()
            master.wait()
            master.stdout.close()
            if pid is not None and pid_alive(pid) and is_mitogen_child(pid):
                os.kill(pid, signal.SIGKILL)
    return summarize('parent_death_exit_ms', times, 3)


def death_master():
    """Run as the victim master: start one child, print its pid, wait."""
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    ctx = router.local()
    pid = ctx.call(mitogen_funcs.getpid)
    sys.stdout.write('%d\n' % pid)
    sys.stdout.flush()
    time.sleep(3600)


# --------------------------------------------------------------------------

METRICS = ['bootstrap', 'bytes', 'rtt', 'tp1', 'tp64', 'cps', 'depth3',
           'start100', 'rss', 'death', 'ssh']

KEYS = [
    ('bootstrap_local_ms', 'ms', True),
    ('bootstrap_bytes', 'B', False),
    ('rtt_us', 'us', True),
    ('throughput_1mib_mbps', 'MB/s', True),
    ('throughput_64mib_mbps', 'MB/s', True),
    ('calls_per_s', 'calls/s', True),
    ('rtt_depth3_us', 'us', True),
    ('throughput_1mib_depth3_mbps', 'MB/s', True),
    ('start_100_local_s', 's', True),
    ('child_rss_kib', 'KiB', True),
    ('parent_death_exit_ms', 'ms', True),
]
# Only with --ssh-host.
SSH_KEYS = [
    ('ssh_bare_ms', 'ms', True),
    ('ssh_bare_cm_ms', 'ms', True),
    ('ssh_first_ms', 'ms', True),
    ('ssh_repeat_ms', 'ms', True),
    ('ssh_first_cm_ms', 'ms', True),
    ('ssh_repeat_cm_ms', 'ms', True),
    ('ssh_first_bytes', 'B', False),
    ('ssh_repeat_bytes', 'B', False),
    ('ssh_repeat_cm_vs_bare_cm', 'x', False),
    ('ssh_repeat_cm_vs_bare', 'x', False),
]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--json', action='store_true',
                    help='print one JSON object instead of a table')
    ap.add_argument('--quick', action='store_true',
                    help='fewer runs (for smoke tests)')
    ap.add_argument('--only', default='',
                    help='comma list of: ' + ','.join(METRICS) +
                    ' (others are emitted as null)')
    ap.add_argument('-v', '--verbose', action='store_true',
                    help='progress on stderr')
    ap.add_argument('--bootstrap-runs', type=int)
    ap.add_argument('--rtt-calls', type=int)
    ap.add_argument('--rtt-warmup', type=int)
    ap.add_argument('--tp1-runs', type=int)
    ap.add_argument('--tp64-runs', type=int)
    ap.add_argument('--cps-calls', type=int, default=10000)
    ap.add_argument('--cps-runs', type=int)
    ap.add_argument('--start-runs', type=int)
    ap.add_argument('--start-count', type=int, default=100,
                    help='contexts to start (key is still start_100_local_s)')
    ap.add_argument('--start-threads', type=int, default=1,
                    help='threads calling router.local() concurrently')
    ap.add_argument('--rss-children', type=int)
    ap.add_argument('--death-runs', type=int)
    ap.add_argument('--death-timeout', type=float, default=30.0)
    ap.add_argument('--ssh-host',
                    help='also measure router.ssh() to this host (python3 '
                    'must be on it): the ssh_* rows of spore bench --target')
    ap.add_argument('--ssh-config', help='ssh config file (ssh -F)')
    ap.add_argument('--ssh-user')
    ap.add_argument('--ssh-port', type=int)
    ap.add_argument('--ssh-runs', type=int)
    ap.add_argument('--death-master', action='store_true',
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    full = dict(bootstrap_runs=15, rtt_calls=2000, rtt_warmup=200,
                tp1_runs=20, tp64_runs=5, cps_runs=3, start_runs=1,
                rss_children=3, death_runs=7, ssh_runs=11)
    quick = dict(bootstrap_runs=5, rtt_calls=500, rtt_warmup=50,
                 tp1_runs=5, tp64_runs=2, cps_runs=1, start_runs=1,
                 rss_children=1, death_runs=3, ssh_runs=1)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    only = [m for m in args.only.split(',') if m]
    for m in only:
        if m not in METRICS:
            ap.error('unknown metric %r' % m)
    args.only = only or METRICS
    if 'ssh' in only and not args.ssh_host:
        ap.error('--only ssh needs --ssh-host')
    return args


def run(args):
    result = {'tool': 'mitogen', 'version': '.'.join(map(str, mitogen.__version__))}
    for key, _, has_range in KEYS:
        result[key] = None
        if has_range:
            result[key + '_min'] = result[key + '_max'] = None
    detail = {}

    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    try:
        want = args.only
        if 'bytes' in want:
            r, detail = bench_bootstrap_bytes(args, router)
            result.update(r)
        if 'bootstrap' in want:
            result.update(bench_bootstrap(args, router))
        if {'rtt', 'tp1', 'tp64', 'cps'} & set(want):
            ctx = router.local()
            child_pid(router, ctx)
            try:
                if 'rtt' in want:
                    result.update(bench_rtt(args, ctx))
                if 'tp1' in want:
                    result.update(bench_throughput(
                        args, ctx, MIB, args.tp1_runs, 'throughput_1mib_mbps'))
                if 'tp64' in want:
                    result.update(bench_throughput(
                        args, ctx, 64 * MIB, args.tp64_runs,
                        'throughput_64mib_mbps'))
                if 'cps' in want:
                    result.update(bench_calls_per_s(args, ctx))
            finally:
                shutdown_all([ctx])
        if 'depth3' in want:
            a = router.local()
            b = router.local(via=a)
            c = router.local(via=b)
            try:
                result.update(bench_rtt(args, c, 'rtt_depth3_us'))
                result.update(bench_throughput(
                    args, c, MIB, args.tp1_runs, 'throughput_1mib_depth3_mbps'))
            finally:
                shutdown_all([c, b, a])
        if 'rss' in want:
            result.update(bench_rss(args, router))
        if 'start100' in want:
            result.update(bench_start_n(args, router))
        if 'death' in want:
            result.update(bench_parent_death(args))
        if 'ssh' in want and args.ssh_host:
            result.update(bench_ssh(args, router))
    finally:
        broker.shutdown()
        broker.join()
        kill_leftovers()
    return result, detail


def fmt(v):
    if v is None:
        return '-'
    if isinstance(v, float):
        if abs(v) >= 1000:
            return '%.0f' % v
        if abs(v) >= 10:
            return '%.1f' % v
        return '%.3g' % v
    return str(v)


def print_table(result, detail, args):
    print('Mitogen %s, Python %s, %d CPUs%s' % (
        result['version'], sys.version.split()[0], os.cpu_count() or 0,
        ' (--quick)' if args.quick else ''))
    rows = [('metric', 'median', 'min', 'max', 'unit')]
    for key, unit, has_range in KEYS + (SSH_KEYS if args.ssh_host else []):
        rows.append((key, fmt(result[key]),
                     fmt(result.get(key + '_min')) if has_range else '',
                     fmt(result.get(key + '_max')) if has_range else '',
                     unit))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, row in enumerate(rows):
        print('  '.join(c.ljust(widths[j]) if j in (0, 4) else c.rjust(widths[j])
                        for j, c in enumerate(row)).rstrip())
        if i == 0:
            print('  '.join('-' * w for w in widths))
    if detail:
        print('bootstrap_bytes = %d argv first stage + %d stdio until '
              'connected + %d stdio for the first call (module + call)' % (
                  detail['argv_first_stage'], detail['stdio_until_connected'],
                  detail['stdio_for_first_call']))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.death_master:
        death_master()
        return 0
    # Turn SIGTERM/SIGHUP into an exception so the finally blocks run.
    def _raise(signum, frame):
        raise KeyboardInterrupt('signal %d' % signum)
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)
    try:
        result, detail = run(args)
    finally:
        kill_leftovers()
    if args.json:
        print(json.dumps(result, sort_keys=False))
    else:
        print_table(result, detail, args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
