#!/usr/bin/env python3
"""Benchmark otpylib (tested with otpylib==0.5.18): processes, messages, supervision.

The Erlang-style process model spore is compared against; see compare-otp.sh.

Usage:
    python3 bench/otp_bench.py [--json] [--quick] [--only a,b,...] [-v]
        [--api backend|process]

Metrics (every median metric also gets <key>_min and <key>_max):
    spawn_us               spawn 100 000 processes that block in receive, in a
                           fresh interpreter per run: time of the whole batch
                           (until every one of them waits in receive) / N
    bytes_per_process      VmRSS growth over those 100 000 idle processes / N
    spawn_gc_off_us        spawn_us with CPython's cyclic GC disabled (gc is on
                           everywhere else; shown to say how much of spawn_us
                           is the interpreter's collector, not otpylib)
    spawn_1m_s             one million idle processes in one runtime: time to
    rss_1m_mib             spawn them all, and VmRSS (MiB) at the end. One run
                           (_min = _max). If that cannot finish within
                           --max-1m-seconds or would not fit in memory, the N
                           reached is extrapolated linearly and
                           spawn_1m_note says so; --quick always extrapolates
                           from the 100 000 runs
    pingpong_local_us      round trip of one message between two processes
                           (each round timed; median over the rounds)
    throughput_local_msgs_per_s  one sender, one receiver, one-way messages/s
                           (until the receiver got the last; mailboxes are
                           unbounded, so the sender never waits)
    call_local_us          gen_server.call() round trip to a gen_server
    crash_to_down_us       a monitored process raises; until the monitoring
                           process has received DOWN
    crash_to_restart_us    a gen_server child of a one_for_one supervisor
                           raises; until the restarted child's init() runs
    pingpong_remote_us     pingpong_local_us between two OS processes (two
                           otpylib nodes on this host, Erlang distribution over
                           TCP loopback)

How otpylib is used (its fastest reasonable usage):
    runtime  AsyncIOBackend (otpylib's only usable runtime backend: its spam
             package imports anyio, not a dependency, and SPAMBackend is no
             RuntimeBackend) on asyncio's default event loop; otpylib
             documents no faster loop. No logger process is registered, so
             otpylib's own log sends are dropped at once (its default).
    api      --api backend (default): the AsyncIOBackend's spawn/send/receive/
             spawn_monitor, bound once - otpylib.process.* does the same plus a
             lock-guarded get_runtime() and one more coroutine frame per call
             (here: pingpong ~15% slower, throughput ~1/3 lower; --api process
             measures that way).
             gen_server and supervisor use otpylib.process internally either way.
    stdout   otpylib print()s on some paths (a gen_server crashing, every
             distribution message): while measuring, sys.stdout is /dev/null.

pingpong_remote_us needs an EPMD on 127.0.0.1:4369, as otpylib's distribution
looks nodes up there. When none listens (no Erlang installed), the remote node's
process serves a stand-in: a minimal EPMD (ALIVE2 and PORT_PLEASE2 only, written
here from the EPMD protocol description); pingpong_remote_epmd says which.
"""

import argparse
import asyncio
import gc
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from importlib.metadata import version as dist_version

from otpylib import gen_server, process, supervisor
from otpylib.gen_server import NoReply, Reply
from otpylib.module import GEN_SERVER, SUPERVISOR, OTPModule
from otpylib.runtime import get_runtime
from otpylib.runtime.atoms import DOWN
from otpylib.runtime.backends.asyncio_backend import (
    AsyncIOBackend, AsyncIODistribution)
from otpylib.runtime.registry import set_distribution

MIB = 1024 * 1024
EPMD_PORT = 4369
PAGE = os.sysconf('SC_PAGE_SIZE')
now = time.perf_counter

# Children (spawn runs, the remote nodes) that must not outlive the benchmark.
_children = []


def otpylib_version():
    try:
        return dist_version('otpylib')
    except Exception:
        return None


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
        sys.stderr.write('[otp_bench] %s\n' % msg)
        sys.stderr.flush()


def rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * PAGE


def mem_available():
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) * 1024
    return None


class Ops(object):
    """spawn/send/receive/spawn_monitor: the backend's methods or otpylib.process."""

    def __init__(self, api):
        if api == 'backend':
            rt = get_runtime()
            self.spawn, self.send = rt.spawn, rt.send
            self.receive, self.spawn_monitor = rt.receive, rt.spawn_monitor
        else:
            self.spawn, self.send = process.spawn, process.send
            self.receive, self.spawn_monitor = process.receive, process.spawn_monitor


async def start_runtime():
    backend = AsyncIOBackend()
    await backend.initialize()
    process.use_runtime(backend)
    return backend


# --------------------------------------------------------------------------
# spawn: one child interpreter per run

_started = 0


def child_spawn(args):
    """Spawn args.n idle processes; print one JSON line; exit without teardown."""

    async def main():
        await start_runtime()
        ops = Ops(args.api)
        spawn, receive = ops.spawn, ops.receive

        async def idle():
            global _started
            _started += 1
            await receive()

        gc.collect()
        if args.gc_off:
            gc.disable()
        rss0 = rss_bytes()
        n, batch, done = args.n, 1000, 0
        deadline = args.deadline
        t0 = now()
        while done < n:
            for _ in range(min(batch, n - done)):
                await spawn(idle)
            done += min(batch, n - done)
            # Let the new processes run up to their receive: asyncio starts
            # every task created so far before this coroutine resumes.
            await asyncio.sleep(0)
            if deadline and now() - t0 > deadline:
                break
        seconds = now() - t0
        rss1 = rss_bytes()
        if _started != done:
            raise RuntimeError('%d spawned but %d started' % (done, _started))
        sys.stdout.write(json.dumps({'n': done, 'seconds': seconds,
                                     'rss0': rss0, 'rss1': rss1}) + '\n')
        sys.stdout.flush()
        # Leave without asyncio.run() cancelling every task: for a million
        # processes that teardown takes longer than spawning them.
        os._exit(0)

    asyncio.run(main())


def run_child(args, extra, timeout):
    argv = [sys.executable, os.path.abspath(__file__), '--api', args.api] + extra
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    _children.append(p)
    try:
        out, _ = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        _children.remove(p)
    if p.returncode != 0:
        raise RuntimeError('child %s exited with %s' % (extra, p.returncode))
    return json.loads(out.decode().strip().splitlines()[-1])


def spawn_run(args, n, gc_off=False, deadline=None):
    extra = ['--child', 'spawn', '--n', str(n)]
    if gc_off:
        extra.append('--gc-off')
    if deadline:
        extra += ['--deadline', str(deadline)]
    r = run_child(args, extra, timeout=(deadline or 600) + 120)
    log(args, 'spawn n=%d%s: %.2f s, %.0f B/process, VmRSS %.0f MiB' % (
        r['n'], ' (gc off)' if gc_off else '', r['seconds'],
        (r['rss1'] - r['rss0']) / r['n'], r['rss1'] / MIB))
    return r


def bench_spawn(args):
    runs = [spawn_run(args, args.spawn_n) for _ in range(args.spawn_runs)]
    out = summarize('spawn_us', [r['seconds'] / r['n'] * 1e6 for r in runs])
    out.update(summarize('bytes_per_process',
                         [(r['rss1'] - r['rss0']) / r['n'] for r in runs], 0))
    return out, runs


def bench_spawn_gc_off(args):
    runs = [spawn_run(args, args.spawn_n, gc_off=True)
            for _ in range(args.gc_off_runs)]
    return summarize('spawn_gc_off_us', [r['seconds'] / r['n'] * 1e6 for r in runs])


def one_million(r, why):
    """spawn_1m_* from run r: measured, or extrapolated linearly to 10^6."""
    m = 1000000
    f = m / r['n']
    s = r['seconds'] * f
    rss = (r['rss0'] + (r['rss1'] - r['rss0']) * f) / MIB
    out = {'spawn_1m_s': round(s, 3), 'spawn_1m_s_min': round(s, 3),
           'spawn_1m_s_max': round(s, 3), 'rss_1m_mib': round(rss, 1),
           'rss_1m_mib_min': round(rss, 1), 'rss_1m_mib_max': round(rss, 1)}
    if r['n'] != m:
        out['spawn_1m_note'] = 'extrapolated linearly from N=%d (%s)' % (r['n'], why)
    return out


def bench_spawn_1m(args, spawn_runs):
    m = 1000000
    if args.quick and spawn_runs:
        # The run whose time is the median one.
        r = sorted(spawn_runs, key=lambda r: r['seconds'])[len(spawn_runs) // 2]
        return one_million(r, '--quick')
    n, why = m, ''
    avail = mem_available()
    if avail:
        # Bytes per process as measured, else a generous guess (--only spawn1m).
        bpp = statistics.median((r['rss1'] - r['rss0']) / r['n']
                                for r in spawn_runs) if spawn_runs else 12000
        need = bpp * m * 1.15 + 256 * MIB
        if need > 0.8 * avail:
            n = max(10000, int(0.8 * avail / (bpp * 1.15) // 10000 * 10000))
            why = '%.0f MiB available; a million would need about %.0f MiB' % (
                avail / MIB, need / MIB)
            log(args, 'spawn_1m: memory: %s; N=%d' % (why, n))
    r = spawn_run(args, n, deadline=args.max_1m_seconds)
    if r['n'] < n:
        why = '; '.join(w for w in (why, 'N=%d not finished within %g s' % (
            n, args.max_1m_seconds)) if w)
    return one_million(r, why)


# --------------------------------------------------------------------------
# local measurements: one runtime in this process, driven from one process

CRASH = 'crash'
_crash_t = [0.0]


class BenchEcho(metaclass=OTPModule, behavior=GEN_SERVER, version='1.0.0'):
    """gen_server answering every call with its request."""

    async def init(self, arg):
        return None

    async def handle_call(self, request, from_, state):
        return (Reply(request), state)

    async def handle_cast(self, request, state):
        return (NoReply(), state)

    async def handle_info(self, message, state):
        return (NoReply(), state)

    async def terminate(self, reason, state):
        pass


class BenchWorker(metaclass=OTPModule, behavior=GEN_SERVER, version='1.0.0'):
    """Supervised child: announces (pid, time) from init; crashes on CRASH."""

    async def init(self, driver):
        t = now()
        await process.send(driver, ('up', process.self(), t))
        return driver

    async def handle_call(self, request, from_, state):
        return (Reply(request), state)

    async def handle_cast(self, request, state):
        return (NoReply(), state)

    async def handle_info(self, message, state):
        if message == CRASH:
            _crash_t[0] = now()
            raise RuntimeError('otp_bench: crash')
        return (NoReply(), state)

    async def terminate(self, reason, state):
        pass


class BenchSup(metaclass=OTPModule, behavior=SUPERVISOR, version='1.0.0'):
    """one_for_one over one BenchWorker; intensity high enough for the runs."""

    async def init(self, driver):
        spec = supervisor.child_spec(id='worker', module=BenchWorker, args=driver,
                                     restart=supervisor.PERMANENT,
                                     name='otp_bench_worker')
        opts = supervisor.options(max_restarts=10 ** 9, max_seconds=1,
                                  strategy=supervisor.ONE_FOR_ONE)
        return ([spec], opts)

    async def terminate(self, reason, state):
        pass


async def bench_pingpong(args, ops, me):
    send, receive = ops.send, ops.receive

    async def ponger():
        while True:
            m = await receive()
            await send(m[0], m)

    peer = await ops.spawn(ponger)
    times = []
    for i in range(args.pp_warmup + args.pp_rounds):
        t0 = now()
        await send(peer, (me, i))
        m = await receive()
        t1 = now()
        if m[1] != i:
            raise RuntimeError('pingpong: got %r for %d' % (m, i))
        if i >= args.pp_warmup:
            times.append((t1 - t0) * 1e6)
    return summarize('pingpong_local_us', times)


async def bench_throughput(args, ops, me):
    send, receive = ops.send, ops.receive
    n = args.tp_msgs

    async def sink():
        for _ in range(n):
            await receive()
        await send(me, ('done', now()))

    rates = []
    for _ in range(args.tp_runs):
        pid = await ops.spawn(sink)
        await asyncio.sleep(0)  # the sink waits in receive
        t0 = now()
        for i in range(n):
            await send(pid, i)
        m = await receive(timeout=60)
        rates.append(n / (m[1] - t0))
        log(args, 'throughput run: %.0f msgs/s' % rates[-1])
    return summarize('throughput_local_msgs_per_s', rates, 1)


async def bench_call(args):
    # gen_server.call() in 0.5.18 finds its target with whereis()/whereis_name():
    # it must be a registered name (a bare pid raises ValueError).
    name = 'otp_bench_echo'
    await gen_server.start(BenchEcho, None, name=name)
    call = gen_server.call
    times = []
    for i in range(args.call_warmup + args.call_count):
        t0 = now()
        r = await call(name, i)
        t1 = now()
        if r != i:
            raise RuntimeError('call: got %r for %d' % (r, i))
        if i >= args.call_warmup:
            times.append((t1 - t0) * 1e6)
    return summarize('call_local_us', times)


async def bench_down(args, ops):
    receive = ops.receive

    async def victim():
        await receive()
        _crash_t[0] = now()
        raise RuntimeError('otp_bench: crash')

    times = []
    for i in range(args.down_warmup + args.down_count):
        pid, ref = await ops.spawn_monitor(victim)
        await asyncio.sleep(0)  # the victim waits in receive
        await ops.send(pid, CRASH)
        m = await receive(timeout=10)
        t1 = now()
        if not (isinstance(m, tuple) and m[0] == DOWN and m[1] == ref):
            raise RuntimeError('crash_to_down: expected DOWN, got %r' % (m,))
        if i >= args.down_warmup:
            times.append((t1 - _crash_t[0]) * 1e6)
    return summarize('crash_to_down_us', times)


async def bench_restart(args, ops, me):
    receive = ops.receive
    rt = get_runtime()

    async def owner():
        # supervisor.start_link() takes the first message it receives as the
        # supervisor's init reply, so it runs here, away from the workers'
        # 'up' announcements to the driver.
        await supervisor.start_link(BenchSup, me, name='otp_bench_sup')
        await ops.send(me, ('sup_ready',))
        await receive()

    await ops.spawn(owner)
    pid = None
    ready = False
    while pid is None or not ready:
        m = await receive(timeout=10)
        if m[0] == 'up':
            pid = m[1]
        elif m[0] == 'sup_ready':
            ready = True
        else:
            raise RuntimeError('crash_to_restart: unexpected %r' % (m,))

    async def monitored(pid):
        # The supervisor monitors a child only after gen_server.start_link()
        # returned; a child crashing before that is never restarted (a race
        # in otpylib 0.5.18), so each crash waits for the monitor (untimed).
        for _ in range(100000):
            info = rt.process_info(pid)
            if info is not None and info.monitored_by:
                return
            await asyncio.sleep(0)
        raise RuntimeError('crash_to_restart: supervisor never monitored %s' % pid)

    times = []
    for i in range(args.restart_warmup + args.restart_count):
        await monitored(pid)
        await ops.send(pid, CRASH)
        m = await receive(timeout=10)
        if m[0] != 'up' or m[1] == pid:
            raise RuntimeError('crash_to_restart: expected a new child, got %r' % (m,))
        pid = m[1]
        if i >= args.restart_warmup:
            times.append((m[2] - _crash_t[0]) * 1e6)
    return summarize('crash_to_restart_us', times)


def run_local(args, want):
    async def driver(fut):
        try:
            ops = Ops(args.api)
            me = process.self()
            out = {}
            if 'pingpong' in want:
                out.update(await bench_pingpong(args, ops, me))
                log(args, 'pingpong_local_us %s' % out['pingpong_local_us'])
            if 'throughput' in want:
                out.update(await bench_throughput(args, ops, me))
            if 'call' in want:
                out.update(await bench_call(args))
                log(args, 'call_local_us %s' % out['call_local_us'])
            if 'down' in want:
                out.update(await bench_down(args, ops))
                log(args, 'crash_to_down_us %s' % out['crash_to_down_us'])
            if 'restart' in want:
                out.update(await bench_restart(args, ops, me))
                log(args, 'crash_to_restart_us %s' % out['crash_to_restart_us'])
            fut.set_result(out)
        except BaseException as e:
            if not fut.done():
                fut.set_exception(e)
            if not isinstance(e, Exception):
                raise

    async def main():
        backend = await start_runtime()
        fut = asyncio.get_running_loop().create_future()
        await process.spawn(driver, args=[fut])
        try:
            return await fut
        finally:
            try:
                await backend.shutdown()
            except Exception:
                pass

    return asyncio.run(main())


# --------------------------------------------------------------------------
# remote: two otpylib nodes in two OS processes

REPLY_NAME = 'otp_bench_driver'
ECHO_NAME = 'otp_bench_echo'
_epmd_nodes = {}  # the stand-in EPMD's registrations: name -> port etc.


async def epmd_stand_in(reader, writer):
    """A minimal EPMD: ALIVE2_REQ (kept registered while the connection
    lasts) and PORT_PLEASE2_REQ, as the EPMD protocol describes them."""
    nodes = _epmd_nodes
    try:
        n = int.from_bytes(await reader.readexactly(2), 'big')
        req = await reader.readexactly(n)
        if req[0] == 120:  # ALIVE2_REQ
            nlen = int.from_bytes(req[9:11], 'big')
            name = req[11:11 + nlen]
            nodes[name] = req[1:9]  # port, type, protocol, highest, lowest
            writer.write(bytes([121, 0, 0, 1]))  # ALIVE2_RESP ok, creation 1
            await writer.drain()
            await reader.read()  # registered until the node hangs up
            nodes.pop(name, None)
        elif req[0] == 122:  # PORT_PLEASE2_REQ
            name = req[1:]
            if name in nodes:
                writer.write(bytes([119, 0]) + nodes[name] +
                             len(name).to_bytes(2, 'big') + name + b'\0\0')
            else:
                writer.write(bytes([119, 1]))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()



def epmd_listening():
    try:
        with socket.create_connection(('127.0.0.1', EPMD_PORT), timeout=1):
            return True
    except OSError:
        return False


def child_remote_b(args):
    """The echo node: answers every message to REPLY_NAME on args.peer."""
    real_stdout = os.dup(1)
    sys.stdout = open(os.devnull, 'w')

    async def main():
        loop = asyncio.get_running_loop()
        if args.serve_epmd:
            await asyncio.start_server(epmd_stand_in, '127.0.0.1', EPMD_PORT)
        backend = await start_runtime()
        dist = AsyncIODistribution(backend, args.node, cookie=args.cookie)
        await dist.start()
        set_distribution(dist)
        ops = Ops(args.api)
        send, receive, peer = ops.send, ops.receive, (REPLY_NAME, args.peer)

        async def echo():
            while True:
                await send(peer, await receive())

        await ops.spawn(echo, name=ECHO_NAME)

        # Exit when the benchmark closes our stdin (or dies).
        def stdin_ready():
            if not os.read(0, 4096):
                os._exit(0)
        loop.add_reader(0, stdin_ready)
        os.write(real_stdout, b'ready\n')
        await asyncio.Event().wait()

    asyncio.run(main())


def child_remote_a(args):
    """The measuring node: round trips to ECHO_NAME on args.peer."""
    real_stdout = sys.stdout
    sys.stdout = open(os.devnull, 'w')

    async def main():
        backend = await start_runtime()
        dist = AsyncIODistribution(backend, args.node, cookie=args.cookie)
        await dist.start()
        set_distribution(dist)
        ops = Ops(args.api)
        fut = asyncio.get_running_loop().create_future()

        async def driver():
            try:
                send, receive, peer = ops.send, ops.receive, (ECHO_NAME, args.peer)
                times = []
                # The first message connects (EPMD lookup, handshake).
                for i in range(args.warmup + args.rounds):
                    t0 = now()
                    await send(peer, i)
                    m = await receive(timeout=10)
                    t1 = now()
                    if m != i:
                        raise RuntimeError('remote pingpong: got %r for %d' % (m, i))
                    if i >= args.warmup:
                        times.append((t1 - t0) * 1e6)
                fut.set_result(times)
            except Exception as e:
                fut.set_exception(e)

        await ops.spawn(driver, name=REPLY_NAME)
        return await fut

    try:
        res = {'times': asyncio.run(main())}
    except Exception as e:
        res = {'error': '%s: %s' % (type(e).__name__, e)}
    real_stdout.write(json.dumps(res) + '\n')
    real_stdout.flush()
    os._exit(0)


def bench_remote(args):
    out = {'pingpong_remote_us': None, 'pingpong_remote_us_min': None,
           'pingpong_remote_us_max': None}
    tag = '%d%s' % (os.getpid(), secrets.token_hex(3))
    a_node, b_node = 'otpbencha%s@127.0.0.1' % tag, 'otpbenchb%s@127.0.0.1' % tag
    cookie = secrets.token_hex(16)
    system_epmd = epmd_listening()
    out['pingpong_remote_epmd'] = (
        'the EPMD listening on 127.0.0.1:%d' % EPMD_PORT if system_epmd else
        "stand-in (none on 127.0.0.1:%d; otp_bench.py's minimal one)" % EPMD_PORT)
    b_argv = [sys.executable, os.path.abspath(__file__), '--api', args.api,
              '--child', 'remote-b', '--node', b_node, '--peer', a_node,
              '--cookie', cookie]
    if not system_epmd:
        b_argv.append('--serve-epmd')
    b = subprocess.Popen(b_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=None if args.verbose else subprocess.DEVNULL)
    _children.append(b)
    try:
        line = b.stdout.readline()
        if line.strip() != b'ready':
            raise RuntimeError('remote node did not start (exit %s)' % b.poll())
        r = run_child(args, ['--child', 'remote-a', '--node', a_node, '--peer',
                             b_node, '--cookie', cookie, '--rounds',
                             str(args.remote_rounds), '--warmup',
                             str(args.remote_warmup)], timeout=300)
        if 'error' in r:
            raise RuntimeError(r['error'])
        out.update(summarize('pingpong_remote_us', r['times']))
        log(args, 'pingpong_remote_us %s' % out['pingpong_remote_us'])
    except Exception as e:
        out['pingpong_remote_note'] = 'otpylib distribution failed: %s' % e
    finally:
        try:
            b.stdin.close()
            b.wait(5)
        except Exception:
            pass
        if b.poll() is None:
            b.kill()
            b.wait()
        b.stdout.close()
        _children.remove(b)
    return out


def kill_children():
    for p in list(_children):
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass


# --------------------------------------------------------------------------

METRICS = ['spawn', 'gcoff', 'spawn1m', 'pingpong', 'throughput', 'call',
           'down', 'restart', 'remote']

KEYS = [
    ('spawn_us', 'us'),
    ('bytes_per_process', 'B'),
    ('spawn_gc_off_us', 'us'),
    ('spawn_1m_s', 's'),
    ('rss_1m_mib', 'MiB'),
    ('pingpong_local_us', 'us'),
    ('throughput_local_msgs_per_s', 'msgs/s'),
    ('call_local_us', 'us'),
    ('crash_to_down_us', 'us'),
    ('crash_to_restart_us', 'us'),
    ('pingpong_remote_us', 'us'),
]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--json', action='store_true',
                    help='print one JSON object instead of a table')
    ap.add_argument('--quick', action='store_true',
                    help='fewer runs (for smoke tests); spawn_1m_* extrapolated')
    ap.add_argument('--only', default='',
                    help='comma list of: ' + ','.join(METRICS) +
                    ' (others are emitted as null)')
    ap.add_argument('-v', '--verbose', action='store_true',
                    help='progress on stderr')
    ap.add_argument('--api', choices=['backend', 'process'], default='backend',
                    help='AsyncIOBackend methods (default, faster) or the '
                    'otpylib.process module functions')
    ap.add_argument('--spawn-n', type=int, default=100000)
    ap.add_argument('--spawn-runs', type=int)
    ap.add_argument('--gc-off-runs', type=int)
    ap.add_argument('--max-1m-seconds', type=float, default=120.0,
                    help='stop the million-process run after this and '
                    'extrapolate (default 120)')
    ap.add_argument('--pp-rounds', type=int)
    ap.add_argument('--pp-warmup', type=int)
    ap.add_argument('--tp-msgs', type=int)
    ap.add_argument('--tp-runs', type=int)
    ap.add_argument('--call-count', type=int)
    ap.add_argument('--call-warmup', type=int)
    ap.add_argument('--down-count', type=int)
    ap.add_argument('--down-warmup', type=int)
    ap.add_argument('--restart-count', type=int)
    ap.add_argument('--restart-warmup', type=int)
    ap.add_argument('--remote-rounds', type=int)
    ap.add_argument('--remote-warmup', type=int)
    # Internal: the child interpreters.
    S = argparse.SUPPRESS
    ap.add_argument('--child', choices=['spawn', 'remote-a', 'remote-b'], help=S)
    ap.add_argument('--n', type=int, help=S)
    ap.add_argument('--gc-off', action='store_true', help=S)
    ap.add_argument('--deadline', type=float, help=S)
    ap.add_argument('--node', help=S)
    ap.add_argument('--peer', help=S)
    ap.add_argument('--cookie', help=S)
    ap.add_argument('--serve-epmd', action='store_true', help=S)
    ap.add_argument('--rounds', type=int, help=S)
    ap.add_argument('--warmup', type=int, help=S)
    args = ap.parse_args(argv)
    full = dict(spawn_runs=5, gc_off_runs=3, pp_rounds=20000, pp_warmup=1000,
                tp_msgs=200000, tp_runs=5, call_count=5000, call_warmup=500,
                down_count=2000, down_warmup=100, restart_count=1000,
                restart_warmup=50, remote_rounds=5000, remote_warmup=200)
    quick = dict(spawn_runs=1, gc_off_runs=1, pp_rounds=2000, pp_warmup=200,
                 tp_msgs=50000, tp_runs=2, call_count=500, call_warmup=50,
                 down_count=200, down_warmup=20, restart_count=100,
                 restart_warmup=10, remote_rounds=500, remote_warmup=50)
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    only = [m for m in args.only.split(',') if m]
    for m in only:
        if m not in METRICS:
            ap.error('unknown metric %r' % m)
    args.only = only or METRICS
    return args


def run(args):
    result = {'tool': 'otpylib', 'version': otpylib_version()}
    for key, _ in KEYS:
        result[key] = result[key + '_min'] = result[key + '_max'] = None
    loop = asyncio.new_event_loop()  # what asyncio.run() uses
    result['runtime'] = 'AsyncIOBackend on asyncio %s (CPython %s)' % (
        type(loop).__name__, sys.version.split()[0])
    loop.close()
    result['api'] = ('AsyncIOBackend methods bound once' if args.api == 'backend'
                     else 'otpylib.process functions')
    want = args.only
    spawn_runs = []
    if 'spawn' in want or ('spawn1m' in want and args.quick):
        r, spawn_runs = bench_spawn(args)
        if 'spawn' in want:
            result.update(r)
    if 'gcoff' in want:
        result.update(bench_spawn_gc_off(args))
    if 'spawn1m' in want:
        result.update(bench_spawn_1m(args, spawn_runs))
        log(args, 'spawn_1m_s %s, rss_1m_mib %s %s' % (
            result['spawn_1m_s'], result['rss_1m_mib'],
            result.get('spawn_1m_note', '')))
    local = [m for m in ('pingpong', 'throughput', 'call', 'down', 'restart')
             if m in want]
    if local:
        result.update(run_local(args, local))
    if 'remote' in want:
        result.update(bench_remote(args))
    return result


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


def print_table(result, args, out):
    out.write('otpylib %s, Python %s, %d CPUs%s\n' % (
        result['version'], sys.version.split()[0], os.cpu_count() or 0,
        ' (--quick)' if args.quick else ''))
    rows = [('metric', 'median', 'min', 'max', 'unit')]
    for key, unit in KEYS:
        rows.append((key, fmt(result[key]), fmt(result.get(key + '_min')),
                     fmt(result.get(key + '_max')), unit))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for i, row in enumerate(rows):
        out.write('  '.join(c.ljust(widths[j]) if j in (0, 4) else c.rjust(widths[j])
                            for j, c in enumerate(row)).rstrip() + '\n')
        if i == 0:
            out.write('  '.join('-' * w for w in widths) + '\n')
    for k, v in result.items():
        if isinstance(v, str) and k not in ('tool', 'version'):
            out.write('%s: %s\n' % (k, v))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child == 'spawn':
        return child_spawn(args)
    if args.child == 'remote-a':
        return child_remote_a(args)
    if args.child == 'remote-b':
        return child_remote_b(args)

    # Turn SIGTERM/SIGHUP into an exception so the finally blocks run.
    def _raise(signum, frame):
        raise KeyboardInterrupt('signal %d' % signum)
    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGHUP, _raise)
    out = sys.stdout
    t0 = now()
    try:
        with open(os.devnull, 'w') as devnull:
            sys.stdout = devnull  # otpylib's print()s
            try:
                result = run(args)
            finally:
                sys.stdout = out
    finally:
        kill_children()
    log(args, 'done in %.1f s' % (now() - t0))
    if args.json:
        out.write(json.dumps(result, sort_keys=False) + '\n')
    else:
        print_table(result, args, out)
    out.flush()
    return 0


if __name__ == '__main__':
    sys.exit(main())
