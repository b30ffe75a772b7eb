#!/usr/bin/env bash
# Standalone test of first_stage.sh (protocol: docs/PROTOCOL.md).
# Needs: bash, gcc with a static libc, zstd, coreutils. Uses when present: dash, perl,
# python3, busybox; as root with unshare(1): the noexec / vm.memfd_noexec / read-only root cases, run
# only inside a private mount + pid namespace (the machine's mounts and sysctls are untouched).
# Prints "N passed, M failed" last; exits non-zero on any failure.
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT=$(cat "$HERE/first_stage.sh")
READY="SPORE-READY 1 $(uname -s) $(uname -m) zstd,raw"
NAME=spore:test.1
EXTRAENV=()   # extra VAR=value for the target's environment
ARGS=()       # arguments after NAME (the cache's: HASH DIR; stage 0's: STAGE-HASH HASH)
READYX=""     # what the READY line carries after the decoders (" cache=hit")
STAGEFEED=""  # stage 0 runs: the file to answer SPORE-STAGE with
STREAM1="stream line 1: this must reach the program intact"
STREAM2="stream line 2 * ? end"

ok()  { echo "PASS $*" >>"$W/results"; echo "ok   $*"; }
bad() { echo "FAIL $*" >>"$W/results"; echo "FAIL $*"; }

# ---------------------------------------------------------------- helpers
close_fds() { local fd; for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null; }

# children of a pid (scan /proc; works without CONFIG_PROC_CHILDREN)
kids() { local s; for s in /proc/[0-9]*/stat; do read -r _ _ _ pp _ <"$s" 2>/dev/null && [ "$pp" = "$1" ] && echo "${s//[!0-9]/}"; done 2>/dev/null; }

leftovers() { ls -a "$XDG" /dev/shm /tmp /var/tmp "$HOMEDIR" 2>/dev/null | grep '^\.spore' | sort; }

# launch SHELL BINDIR NAME: start the first stage on two fifos; sets PID WFD RFD
launch() {
  rm -f "$W/in" "$W/out"; mkfifo "$W/in" "$W/out"
  ( close_fds; exec env -i PATH="$2" HOME="$HOMEDIR" ${XDG:+XDG_RUNTIME_DIR="$XDG"} FS_MARK="a b  c" "${EXTRAENV[@]}" \
      $(abs $1) -c "$SCRIPT" "$3" "${ARGS[@]}" <"$W/in" >"$W/out" 2>"$W/stderr" ) &
  PID=$!
  exec {WFD}>"$W/in" {RFD}<"$W/out"
}
finish() { # close our ends, reap, sets RC
  exec {WFD}>&- 2>/dev/null
  local i; for i in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null
  wait "$PID"; RC=$?
  exec {RFD}<&- 2>/dev/null
}

# reference environment: what the same shell passes to a program it execs
refenv() { env -i PATH="$2" HOME="$HOMEDIR" ${XDG:+XDG_RUNTIME_DIR="$XDG"} FS_MARK="a b  c" "${EXTRAENV[@]}" \
  $(abs $1) -c 'exec "$0" x' "$REFPROG" </dev/null | grep '^ENV:' | grep -v '^ENV:_=' | sort; }

# expect_ok LABEL SHELL BINDIR ENC KIND(py|pl|sh) [EXE-glob] [NAME]
expect_ok() {
  local label=$1 sh=$2 bin=$3 enc=$4 kind=$5 exeglob=${6:-} name=${7:-$NAME}
  local before line out=() why="" kidlist
  [ -n "$exeglob" ] || { [ "$kind" = sh ] && exeglob="*/.spore.* (deleted)" || exeglob="/memfd:spore (deleted)"; }
  before=$(leftovers)
  local t0=$SECONDS
  launch "$sh" "$bin" "$name"
  if ! read -r -t 10 -u "$RFD" line; then why="no READY line"
  elif [ -n "$STAGEFEED" ] && { [ "$line" != SPORE-STAGE ] || ! cat "$STAGEFEED" >&"$WFD" || ! read -r -t 10 -u "$RFD" line; }; then why="stage 0: $line"
  elif [ "$line" != "$READY$READYX" ]; then why="READY line: $line"
  else
    cat "$W/blob.$enc" >&"$WFD"          # header + payload + stream, written back to back
    while read -r -t 15 -u "$RFD" line; do out+=("$line"); [ "$line" = "$STREAM2" ] && break; done
    kidlist=$(kids "$PID")
  fi
  finish
  [ -n "$why" ] || why=$(check_ok_output)
  if [ -z "$why" ] && [ "$(leftovers)" != "$before" ]; then why="temp files left: $(leftovers)"; fi
  if [ -z "$why" ]; then ok "$label ($((SECONDS - t0))s)"; else bad "$label: $why"; sed 's/^/    stderr: /' "$W/stderr" | head -5; fi
}
check_ok_output() {
  local argv0=$name fds=" 0 1 2" exe got
  [ "$kind" = sh ] && { argv0=/proc/self/fd/9; fds=" 0 1 2 9"; }
  [ "${out[0]:-}" = "ARGV0=$argv0 ARG1=--spore-child" ] || { echo "argv line: ${out[0]:-<none>}"; return; }
  [ "${out[1]:-}" = "PID=$PID" ] || { echo "not the same pid: ${out[1]:-} vs sh $PID"; return; }
  exe=${out[2]#EXE=}
  # shellcheck disable=SC2053
  [[ $exe == $exeglob ]] || { echo "EXE=$exe, expected $exeglob"; return; }
  [ "${out[3]:-}" = "FDS=$fds" ] || { echo "${out[3]:-no FDS}, expected FDS=$fds"; return; }
  got=$(printf '%s\n' "${out[@]}" | grep '^ENV:' | grep -v '^ENV:_=' | sort)
  [ "$got" = "$(refenv "$sh" "$bin")" ] || { echo "environment differs"; return; }
  local n=${#out[@]}
  [ "${out[n-3]}" = STREAM-BEGIN ] && [ "${out[n-2]}" = "$STREAM1" ] && [ "${out[n-1]}" = "$STREAM2" ] \
    || { echo "stream mangled: ${out[*]: -3}"; return; }
  [ -z "$kidlist" ] || { echo "image has child processes: $kidlist"; return; }
  [ "$RC" = 0 ] || { echo "exit status $RC"; return; }
}

# expect_fail LABEL SHELL BINDIR INPUTFILE EXPECTED-LINE-or-glob
expect_fail() {
  local label=$1 sh=$2 bin=$3 input=$4 want=$5 line lines=() why="" before t0=$SECONDS
  before=$(leftovers)
  launch "$sh" "$bin" "$NAME"
  if ! read -r -t 10 -u "$RFD" line; then why="no READY line"
  elif [ "$line" != "$READY" ] && [ "${line% raw}" = "$line" ]; then why="READY line: $line"
  else
    cat "$input" >&"$WFD"; exec {WFD}>&-
    while read -r -t 30 -u "$RFD" line; do lines+=("$line"); done
  fi
  finish
  if [ -z "$why" ]; then
    # shellcheck disable=SC2053
    if [ ${#lines[@]} != 1 ] || [[ ${lines[0]} != $want ]] || [[ ${lines[0]} == *" " ]]; then why="got: ${lines[*]:-<nothing>}|; want: $want"
    elif [ "$RC" != 1 ]; then why="exit status $RC"
    elif [ "$(leftovers)" != "$before" ]; then why="temp files left"; fi
  fi
  if [ -z "$why" ]; then ok "$label ($((SECONDS - t0))s)"; else bad "$label: $why"; fi
}

mkbin() { # mkbin DIR TOOL...  (symlinks to system tools; "bb:TOOL" = busybox applet)
  local d=$W/bin/$1 t p; shift; mkdir -p "$d"
  for t; do
    case $t in
      bb:*) ln -sf "$(command -v busybox)" "$d/${t#bb:}"; continue ;;
      python3) p=$PY ;;
      *) p=$(PATH=/usr/local/bin:/usr/bin:/bin command -v "$t") ;;
    esac
    [ -n "$p" ] && ln -sf "$p" "$d/$t"
  done
  echo "$d"
}

have() { command -v "$1" >/dev/null 2>&1; }
abs() { echo "$(command -v "$1")" "${@:2}"; }   # shell word list with an absolute path

# ---------------------------------------------------------------- inner: private mount+pid namespace
if [ "${1:-}" = --inner ]; then
  W=$2; PY=$3; outer_mnt=$4
  [ "$(readlink /proc/self/ns/mnt)" != "$outer_mnt" ] || { echo "not in a private mount namespace"; exit 1; }
  [ "$$" = 1 ] || { echo "not in a private pid namespace"; exit 1; }
  XDG=$W/xdg-ro HOMEDIR=$W/home-exec
  mkdir -p "$XDG" "$HOMEDIR"
  mount -o remount,noexec /dev/shm
  for d in /tmp /var/tmp; do mount --bind "$d" "$d" && mount -o remount,bind,noexec "$d"; done
  mount -t tmpfs -o ro,size=1m tmpfs "$XDG"
  mount -t tmpfs -o size=64m,mode=700 tmpfs "$HOMEDIR"   # an exec-able $HOME
  REFPROG=$HOMEDIR/refprog; cp "$W/prog" "$REFPROG"
  PYB=$(mkbin py uname dd zstd cat head rm mktemp wc chmod python3)
  PLB=$(mkbin pl uname dd zstd cat head rm mktemp wc chmod perl)
  SHB=$(mkbin sh uname dd zstd cat head rm mktemp wc chmod)
  DASH=$(command -v dash || echo sh)
  H=$HOMEDIR
  echo "# namespace: $XDG read-only, /dev/shm /tmp /var/tmp noexec, \$HOME=$H exec; vm.memfd_noexec=$(cat /proc/sys/vm/memfd_noexec)"
  expect_ok "ns memfd_noexec=0: python3 uses memfd" "$DASH" "$PYB" raw py
  expect_ok "ns memfd_noexec=0: perl uses memfd" "$DASH" "$PLB" zstd pl
  expect_ok "ns: dash pure shell falls through to \$HOME" "$DASH" "$SHB" raw sh "$H/.spore.* (deleted)"
  have busybox && expect_ok "ns: busybox ash pure shell falls through to \$HOME" "busybox ash" "$SHB" zstd sh "$H/.spore.* (deleted)"
  echo 1 >/proc/sys/vm/memfd_noexec
  echo "# vm.memfd_noexec=$(cat /proc/sys/vm/memfd_noexec) (this pid namespace only)"
  expect_ok "ns memfd_noexec=1: python3 still uses memfd (MFD_EXEC)" "$DASH" "$PYB" zstd py
  expect_ok "ns memfd_noexec=1: perl still uses memfd (MFD_EXEC)" "$DASH" "$PLB" raw pl
  echo 2 >/proc/sys/vm/memfd_noexec
  echo "# vm.memfd_noexec=$(cat /proc/sys/vm/memfd_noexec) (this pid namespace only)"
  expect_ok "ns memfd_noexec=2: python3 falls through to \$HOME" "$DASH" "$PYB" raw py "$H/.spore-* (deleted)"
  expect_ok "ns memfd_noexec=2: perl falls through to \$HOME" "$DASH" "$PLB" zstd pl "$H/.spore-* (deleted)"
  mount -o remount,noexec "$HOMEDIR"
  echo "# \$HOME now noexec too: everything must fail"
  tail="$XDG: create failed (Read-only file system); /dev/shm: exec failed (Permission denied); /tmp: exec failed (Permission denied); /var/tmp: exec failed (Permission denied); $H: exec failed (Permission denied)"
  expect_fail "ns all fail: python3 lists every place" "$DASH" "$PYB" "$W/blob.raw" "SPORE-FAIL memfd(python3): create failed (Permission denied); $tail"
  expect_fail "ns all fail: perl lists every place" "$DASH" "$PLB" "$W/blob.zstd" "SPORE-FAIL memfd(perl): create failed (Permission denied); $tail"
  tail=${tail//"(Read-only file system)"/}; tail=${tail//"create failed "/"create failed"}
  expect_fail "ns all fail: dash pure shell lists every place" "$DASH" "$SHB" "$W/blob.raw" "SPORE-FAIL memfd: no python3 or perl; $tail"
  have busybox && expect_fail "ns all fail: busybox ash pure shell lists every place" "busybox ash" "$SHB" "$W/blob.zstd" "SPORE-FAIL memfd: no python3 or perl; $tail"
  # A read-only root file system (/tmp and /var/tmp on it): memfd needs no
  # file system at all, a pure shell uses the one writable place left
  # (/dev/shm, made exec-able), and with none left the error names each.
  mount --rbind "$W" "$W"   # the test's own files (and its tmpfs mounts) stay as they are
  mount -o remount,bind,ro /
  for d in /tmp /var/tmp; do mount -o remount,bind,ro,noexec "$d"; done
  mount -o remount,exec /dev/shm
  mount -o remount,exec "$HOMEDIR"   # where the reference program runs; after /dev/shm in the order
  echo 0 >/proc/sys/vm/memfd_noexec
  echo "# read-only root: / /tmp /var/tmp read-only, /dev/shm exec, vm.memfd_noexec=0"
  touch /spore-ro-probe 2>/dev/null && { rm -f /spore-ro-probe; bad "ro root: / is still writable"; }
  expect_ok "ro root: python3 uses memfd" "$DASH" "$PYB" zstd py
  expect_ok "ro root: perl uses memfd" "$DASH" "$PLB" raw pl
  expect_ok "ro root: dash pure shell uses /dev/shm" "$DASH" "$SHB" zstd sh "/dev/shm/.spore.* (deleted)"
  mount -o remount,noexec /dev/shm
  mount -o remount,noexec "$HOMEDIR"
  tail="$XDG: create failed; /dev/shm: exec failed (Permission denied); /tmp: create failed; /var/tmp: create failed; $H: exec failed (Permission denied)"
  expect_fail "ro root all fail: dash pure shell lists every place" "$DASH" "$SHB" "$W/blob.raw" "SPORE-FAIL memfd: no python3 or perl; $tail"
  exit 0
fi

# ---------------------------------------------------------------- outer
W=$(mktemp -d "${TMPDIR:-/tmp}/fs-test.XXXXXX")
trap 'rm -rf "$W"' EXIT
: >"$W/results"
for t in gcc zstd; do have $t || { echo "missing $t"; echo "0 passed, 1 failed"; exit 1; }; done
PY=$(python3 -c 'import os,sys;print(os.path.realpath(sys.executable))' 2>/dev/null)
XDG="" HOMEDIR=$W/home REFPROG=$W/prog; mkdir -p "$HOMEDIR"

cat >"$W/prog.c" <<'EOF'
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
extern char **environ;
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--spore-probe")) { fputs("spore-probe-ok\n", stdout); return 0; }
    char exe[512] = "", buf[4096]; ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    printf("ARGV0=%s ARG1=%s\nPID=%d\nEXE=%s\nFDS=", argv[0], argc > 1 ? argv[1] : "", (int)getpid(), exe);
    DIR *d = opendir("/proc/self/fd"); struct dirent *e;
    while (d && (e = readdir(d))) if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d)) printf(" %s", e->d_name);
    if (d) closedir(d);
    printf("\n");
    for (char **p = environ; *p; p++) printf("ENV:%s\n", *p);
    printf("STREAM-BEGIN\n"); fflush(stdout);
    while ((n = read(0, buf, sizeof buf)) > 0) { fwrite(buf, 1, n, stdout); fflush(stdout); }
    printf("STREAM-END\n");
    return 0;
}
EOF
gcc -static -O2 -o "$W/prog" "$W/prog.c" || { echo "cannot build a static test program"; echo "0 passed, 1 failed"; exit 1; }
zstd -q -19 -o "$W/prog.zst" "$W/prog"
size() { stat -c %s "$1"; }
{ printf 'raw %d\n' "$(size "$W/prog")"; cat "$W/prog"; printf '%s\n%s\n' "$STREAM1" "$STREAM2"; } >"$W/blob.raw"
{ printf 'zstd %d\n' "$(size "$W/prog.zst")"; cat "$W/prog.zst"; printf '%s\n%s\n' "$STREAM1" "$STREAM2"; } >"$W/blob.zstd"
{ printf 'raw %d\n' "$(size "$W/prog")"; head -c 1000 "$W/prog"; } >"$W/trunc.raw"
{ printf 'zstd %d\n' "$(size "$W/prog.zst")"; head -c 777 "$W/prog.zst"; } >"$W/trunc.zstd"
{ printf 'zstd 100\n'; head -c 100 "$W/prog"; printf 'stream\n'; } >"$W/notzstd"
printf 'hello world\n' >"$W/garbage1"
printf 'GET / HTTP/1.1\r\n\r\n' >"$W/garbage2"
printf 'gzip 100\n' >"$W/unknown"
printf 'raw 0123\n' >"$W/leadingzero"
printf 'raw 123456789012345678901234567890\n' >"$W/toolong"
: >"$W/empty"
RAWN=$(size "$W/prog"); ZN=$(size "$W/prog.zst")

TOOLS="uname dd zstd cat head rm mktemp wc chmod"
PYB=$(mkbin py $TOOLS python3)
PLB=$(mkbin pl $TOOLS perl)
SHB=$(mkbin sh $TOOLS)
SHNM=$(mkbin sh-nomktemp uname dd zstd cat head rm wc chmod)
UNZ=$(mkbin unzstd-only uname dd unzstd cat head rm mktemp wc chmod python3)
NOZ=$(mkbin nozstd uname dd cat head rm mktemp wc chmod python3)
if have busybox; then
  BBB=$(mkbin bb bb:uname bb:dd bb:cat bb:head bb:rm bb:mktemp bb:wc bb:chmod zstd)
  NFB=$(mkbin bb-nofullblock bb:uname bb:cat bb:head bb:rm bb:mktemp bb:wc bb:chmod zstd)
  printf '#!/bin/sh\ncase "$*" in *fullblock*) echo "dd: invalid iflag" >&2; exit 1;; esac\nexec %s dd "$@"\n' "$(command -v busybox)" >"$NFB/dd"
  chmod +x "$NFB/dd"
else
  echo "# skipping busybox-tool cases (busybox not installed)"
fi

SHELLS=(dash bash "bash --posix" "busybox ash")
for s in "${SHELLS[@]}"; do have ${s%% *} || echo "# skipping shell $s (not installed)"; done

for s in "${SHELLS[@]}"; do
  have ${s%% *} || continue
  for enc in raw zstd; do
    [ -n "$PY" ] && expect_ok "$s python3 $enc" "$s" "$PYB" $enc py
    have perl && expect_ok "$s perl $enc" "$s" "$PLB" $enc pl
    expect_ok "$s pure-shell $enc" "$s" "$SHB" $enc sh
  done
done
if have dash; then
  if have busybox; then
    expect_ok "dash pure-shell busybox tools (dd iflag=fullblock) raw" dash "$BBB" raw sh
    expect_ok "dash pure-shell busybox tools (dd iflag=fullblock) zstd" dash "$BBB" zstd sh
    expect_ok "dash pure-shell dd without fullblock (dd bs=1) raw" dash "$NFB" raw sh
    expect_ok "dash pure-shell dd without fullblock (dd bs=1) zstd" dash "$NFB" zstd sh
  fi
  expect_ok "dash pure-shell without mktemp" dash "$SHNM" zstd sh
  [ -n "$PY" ] && expect_ok "dash python3 with unzstd only" dash "$UNZ" zstd py
  [ -n "$PY" ] && expect_ok "dash python3 odd NAME (spaces, glob, quote)" dash "$PYB" raw py "" "sp ore*: it's"
  have perl && expect_ok "dash perl odd NAME (spaces, glob, quote)" dash "$PLB" zstd pl "" "sp ore*: it's"
  mkdir -p "$W/xdg"; XDG=$W/xdg
  expect_ok "dash pure-shell uses \$XDG_RUNTIME_DIR first" dash "$SHB" raw sh "$W/xdg/.spore.* (deleted)"
  [ -n "$PY" ] && for v in LC_CTYPE=C LC_CTYPE=POSIX LANG=C LC_ALL=C "LC_CTYPE=x y"; do
    EXTRAENV=("$v"); expect_ok "dash python3 keeps environment with $v (no locale coercion leak)" dash "$PYB" raw py
  done; EXTRAENV=()
  XDG=/nonexistent/spore-xdg
  expect_ok "dash pure-shell skips a nonexistent \$XDG_RUNTIME_DIR" dash "$SHB" zstd sh "/dev/shm/.spore.* (deleted)"
  XDG=""
fi

# failures: every path must print one SPORE-FAIL line and exit 1
for s in "${SHELLS[@]}"; do
  have ${s%% *} || continue
  kinds=(); [ -n "$PY" ] && kinds+=("python3:$PYB"); have perl && kinds+=("perl:$PLB"); kinds+=("pure-shell:$SHB")
  for k in "${kinds[@]}"; do
    kn=${k%%:*} kb=${k#*:}
    expect_fail "$s $kn truncated raw" "$s" "$kb" "$W/trunc.raw" "SPORE-FAIL payload truncated: got 1000 of $RAWN bytes"
    expect_fail "$s $kn truncated zstd" "$s" "$kb" "$W/trunc.zstd" "SPORE-FAIL payload truncated: got 777 of $ZN bytes"
    expect_fail "$s $kn payload not zstd" "$s" "$kb" "$W/notzstd" "SPORE-FAIL decode failed: zstd: ?*"
  done
  expect_fail "$s garbage header" "$s" "$SHB" "$W/garbage1" "SPORE-FAIL bad header hello world"
  expect_fail "$s HTTP header" "$s" "$SHB" "$W/garbage2" "SPORE-FAIL bad header"
  expect_fail "$s unknown encoding" "$s" "$SHB" "$W/unknown" "SPORE-FAIL unknown encoding gzip"
  expect_fail "$s leading zero size" "$s" "$SHB" "$W/leadingzero" "SPORE-FAIL bad header raw 0123"
  expect_fail "$s size too long" "$s" "$SHB" "$W/toolong" "SPORE-FAIL bad header raw 1234567890123456*"
  expect_fail "$s EOF before header" "$s" "$SHB" "$W/empty" "SPORE-FAIL bad header"
  expect_fail "$s zstd payload without decoder" "$s" "$NOZ" "$W/blob.zstd" "SPORE-FAIL no zstd decoder"
  # /dev/zero as stdin: must terminate quickly
  t0=$SECONDS
  got=$(env -i PATH="$SHB" "$(command -v timeout)" 10 $(abs $s) -c "$SCRIPT" "$NAME" </dev/zero 2>/dev/null); rc=$?
  want="$READY"$'\n'"SPORE-FAIL bad header"
  if [ "$got" = "$want" ] && [ $rc = 1 ] && [ $((SECONDS - t0)) -le 3 ]; then ok "$s /dev/zero stdin ($((SECONDS - t0))s)"
  else bad "$s /dev/zero stdin: rc=$rc after $((SECONDS - t0))s, got: $got"; fi
done
# the image cache (first stage args HASH DIR), under each interpreter
{ printf 'raw %d s\n' "$(size "$W/prog")"; cat "$W/prog"; printf '%s\n%s\n' "$STREAM1" "$STREAM2"; } >"$W/blob.rawstore"
{ printf 'zstd %d s\n' "$(size "$W/prog.zst")"; cat "$W/prog.zst"; printf '%s\n%s\n' "$STREAM1" "$STREAM2"; } >"$W/blob.zstdstore"
{ printf 'cached 0\n'; printf '%s\n%s\n' "$STREAM1" "$STREAM2"; } >"$W/blob.cached"
HASH=$(sha256sum <"$W/prog"); HASH=${HASH%% *}
CD=$W/cache; mkdir -m 700 "$CD"
kept() { cmp -s "$CD/$HASH" "$W/prog" && [ -z "$(find "$CD" -name "*.*")" ]; }
CTOOLS="$TOOLS sha256sum ls mv mkdir id"
kinds=(); [ -n "$PY" ] && kinds+=("py:$(mkbin cache-py $CTOOLS python3)"); have perl && kinds+=("pl:$(mkbin cache-pl $CTOOLS perl)")
kinds+=("sh:$(mkbin cache-sh $CTOOLS)")
# busybox's ls -n, sha256sum, mkdir -m and id print and do the same
have busybox && kinds+=("sh:$(mkbin cache-bb bb:uname bb:dd bb:cat bb:head bb:rm bb:mktemp bb:wc bb:chmod zstd bb:sha256sum bb:ls bb:mv bb:mkdir bb:id)")
for k in "${kinds[@]}"; do
  kn=${k%%:*} kb=${k#*:}
  rm -f "$CD"/*; ARGS=("$HASH" "$CD")
  READYX=" cache=miss"; expect_ok "dash $kn cache miss: kept after a payload marked s" dash "$kb" zstdstore "$kn"
  kept && ok "dash $kn cache: the kept entry is the image" || bad "dash $kn cache: entry: $(ls -la "$CD")"
  READYX=" cache=hit"; expect_ok "dash $kn cache hit: runs the kept image" dash "$kb" cached "$kn"
  printf tampered | dd of="$CD/$HASH" bs=1 seek=300 conv=notrunc 2>/dev/null
  READYX=" cache=miss"; expect_ok "dash $kn cache: a tampered entry is a miss" dash "$kb" rawstore "$kn"
  kept && ok "dash $kn cache: the tampered entry is replaced" || bad "dash $kn cache: not replaced"
  rm -f "$CD/$HASH"; expect_ok "dash $kn cache: a payload not marked s is not kept" dash "$kb" raw "$kn"
  [ ! -e "$CD/$HASH" ] && ok "dash $kn cache: nothing kept" || bad "dash $kn cache: kept unasked"
  ARGS=(); READYX=""
  expect_fail "dash $kn cached header without a cache" dash "$kb" "$W/blob.cached" "SPORE-FAIL unknown encoding cached"
done
for i in $(seq 10); do printf '%064d' "$i" >"$CD/$(printf '%064d' "$i")"; touch -d "@$((1000000 + i))" "$CD/$(printf '%064d' "$i")"; done
: >"$CD/notes.txt"; ARGS=("$HASH" "$CD"); READYX=" cache=miss"
expect_ok "dash cache miss prunes old entries" dash "${kinds[0]#*:}" raw "${kinds[0]%%:*}"
n=$(find "$CD" -type f | wc -l)
[ "$n" = 8 ] && [ -e "$CD/notes.txt" ] && ok "cache keeps the 7 newest entries and what is not an entry" || bad "cache after pruning: $(ls "$CD")"
ARGS=(); READYX=""

# stage 0: the first stage from the cache, or asked for and kept
SCRIPT_FS=$SCRIPT; SCRIPT=$(cat "$HERE/stage0.sh")
SHASH=$(sha256sum <"$HERE/first_stage.sh"); SHASH=${SHASH%% *}
{ cat "$HERE/first_stage.sh"; echo SPORE-END; } >"$W/stagefeed"
XC=$W/xc; EXTRAENV=("XDG_CACHE_HOME=$XC"); ARGS=("$SHASH" "$HASH")
for k in "${kinds[@]}"; do
  kn=${k%%:*} kb=${k#*:}
  rm -rf "$XC"
  STAGEFEED=$W/stagefeed READYX=" cache=miss"
  expect_ok "stage 0 $kn: asks for the first stage, keeps it and the image" dash "$kb" zstdstore "$kn"
  cmp -s "$XC/spore/$SHASH" "$HERE/first_stage.sh" && cmp -s "$XC/spore/$HASH" "$W/prog" \
    && [ "$(stat -c %a "$XC/spore")" = 700 ] && ok "stage 0 $kn: both kept in a 0700 dir" || bad "stage 0 $kn: kept: $(ls -la "$XC/spore")"
  STAGEFEED="" READYX=" cache=hit"
  expect_ok "stage 0 $kn: the next contact runs both from the cache" dash "$kb" cached "$kn"
  printf tampered | dd of="$XC/spore/$SHASH" bs=1 seek=300 conv=notrunc 2>/dev/null
  STAGEFEED=$W/stagefeed READYX=" cache=hit"
  expect_ok "stage 0 $kn: a tampered first stage is asked for again" dash "$kb" cached "$kn"
  cmp -s "$XC/spore/$SHASH" "$HERE/first_stage.sh" && ok "stage 0 $kn: and replaced" || bad "stage 0 $kn: not replaced"
done
chmod 755 "$XC/spore"; before=$(ls "$XC/spore")
STAGEFEED=$W/stagefeed READYX=""
expect_ok "stage 0: a directory others can read is no cache" dash "${kinds[0]#*:}" zstd "${kinds[0]%%:*}"
[ "$(ls "$XC/spore")" = "$before" ] && ok "stage 0: nothing read or kept there" || bad "stage 0: kept in an open dir"
rm -rf "$XC"; STAGEFEED=""
launch dash "${kinds[0]#*:}" "$NAME"
read -r -t 10 -u "$RFD" line; head -c 1000 "$HERE/first_stage.sh" >&"$WFD"; exec {WFD}>&-
read -r -t 10 -u "$RFD" line2; finish
[ "$line" = SPORE-STAGE ] && [ "$line2" = "SPORE-FAIL first stage truncated" ] && [ "$RC" = 1 ] \
  && ok "stage 0: a truncated first stage fails" || bad "stage 0 truncated: $line / $line2 / rc $RC"
SCRIPT=$SCRIPT_FS; EXTRAENV=(); ARGS=(); READYX=""

# READY line without zstd
got=$(env -i PATH="$NOZ" /bin/sh -c "$SCRIPT" "$NAME" </dev/null | head -1)
[ "$got" = "SPORE-READY 1 $(uname -s) $(uname -m) raw" ] && ok "READY without zstd says raw only" || bad "READY without zstd: $got"

# noexec / memfd_noexec fallbacks, only inside a private mount + pid namespace
if [ "$(id -u)" = 0 ] && have unshare && [ -n "$PY" ] && have perl \
   && unshare -m -p -f --mount-proc true 2>/dev/null; then
  host_memfd=$(cat /proc/sys/vm/memfd_noexec 2>/dev/null) host_mounts=$(findmnt -rno TARGET,OPTIONS)
  unshare -m -p -f --mount-proc --propagation private bash "$0" --inner "$W" "$PY" "$(readlink /proc/self/ns/mnt)"
  [ "$(cat /proc/sys/vm/memfd_noexec 2>/dev/null)" = "$host_memfd" ] || bad "host vm.memfd_noexec changed!"
  [ "$(findmnt -rno TARGET,OPTIONS)" = "$host_mounts" ] || bad "host mount table changed!"
else
  echo "# skipping namespace (noexec / vm.memfd_noexec) cases: need root, unshare, python3 and perl"
fi

P=$(grep -c '^PASS' "$W/results"); F=$(grep -c '^FAIL' "$W/results")
echo "$P passed, $F failed"
[ "$F" = 0 ] && [ "$P" -gt 0 ]
