#!/usr/bin/env bash
# Smoke test of the spore test bed: one PASS/FAIL line per check, exit status
# non-zero if any check failed. Run as root after testbed/setup.sh.
set -uo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[ "$(id -u)" = 0 ] || { echo "check.sh: must run as root" >&2; exit 1; }
if [ ! -r "$TB_ENV" ]; then
  echo "FAIL env file $TB_ENV missing (run testbed/setup.sh)"
  exit 1
fi
# shellcheck disable=SC1090
. "$TB_ENV"

ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# check NAME FUNC ARGS...: PASS if FUNC exits 0 within 30 s. FUNC runs in a
# fresh copy of this script ("check.sh __run FUNC ARGS...") so that timeout(1)
# can bound it and kill everything it started.
check() {
  local name=$1 t0 rc
  shift
  t0=$(date +%s%N)
  timeout -k 5 30 "$BASH" "$0" __run "$@" >"$out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ]; then
    printf 'PASS %-48s %5d ms\n' "$name" "$(ms_since "$t0")"
  else
    printf 'FAIL %-48s %5d ms (exit %d)\n' "$name" "$(ms_since "$t0")" "$rc"
    sed 's/^/     | /' "$out" | tail -15
    failures=$((failures + 1))
  fi
}

# prints WANT CMD...: CMD succeeds and its stdout contains WANT.
prints() {
  local want=$1 got
  shift
  got=$("$@") || return
  case $got in
    *"$want"*) return 0 ;;
    *) echo "wanted output containing '$want', got '$got'"; return 1 ;;
  esac
}

# fails_with WANT CMD...: CMD fails and its output contains WANT.
fails_with() {
  local want=$1 got
  shift
  if got=$("$@" 2>&1); then echo "unexpectedly succeeded: $got"; return 1; fi
  case $got in
    *"$want"*) return 0 ;;
    *) echo "failed, but without '$want': $got"; return 1 ;;
  esac
}

SSH_OPTS=(-F none -o BatchMode=yes -o IdentitiesOnly=yes -i "$SPORE_TB_SSH_KEY"
  -o UserKnownHostsFile="$SPORE_TB_SSH_KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null
  -o StrictHostKeyChecking=yes -o KexAlgorithms="$SPORE_TB_SSH_KEX" -o ConnectTimeout=2)
# Same, but allowed to prompt (sshpass answers) and without the plain key.
SSH_PW_OPTS=(-F none -o BatchMode=no -o IdentitiesOnly=yes
  -o UserKnownHostsFile="$SPORE_TB_SSH_KNOWN_HOSTS" -o GlobalKnownHostsFile=/dev/null
  -o StrictHostKeyChecking=yes -o KexAlgorithms="$SPORE_TB_SSH_KEX" -o ConnectTimeout=2)
A=$SPORE_TB_SSH_USER
LO=(-p "$SPORE_TB_SSH_PORT" "$A@$SPORE_TB_SSH_HOST")

ssh_lo_key() { prints "$A" ssh "${SSH_OPTS[@]}" "${LO[@]}" id -un; }
# The chatty login of user C: a banner before the command's output, and a
# closed account that ends the session before the command runs.
ssh_lo_chatty() {
  prints "Welcome to the spore test bed" ssh "${SSH_OPTS[@]}" -o SetEnv=SPORE_TB_LOGIN=banner \
    -p "$SPORE_TB_SSH_PORT" "$SPORE_TB_USER_C@$SPORE_TB_SSH_HOST" echo command-ran || return
  fails_with "closed for maintenance" ssh "${SSH_OPTS[@]}" -o SetEnv=SPORE_TB_LOGIN=closed \
    -p "$SPORE_TB_SSH_PORT" "$SPORE_TB_USER_C@$SPORE_TB_SSH_HOST" echo command-ran
}
ssh_lo_passphrase() {
  prints "$A" sshpass -P passphrase -p "$SPORE_TB_SSH_KEY_PASSPHRASE" \
    ssh "${SSH_PW_OPTS[@]}" -i "$SPORE_TB_SSH_KEY_ENCRYPTED" -o PreferredAuthentications=publickey \
    "${LO[@]}" id -un
}
ssh_lo_password() {
  prints "$A" sshpass -p "$SPORE_TB_SSH_PASSWORD" ssh "${SSH_PW_OPTS[@]}" -o PubkeyAuthentication=no \
    -o PreferredAuthentications="$1" "${LO[@]}" id -un
}
# shellcheck disable=SC2016 # expanded by the remote shell
ssh_lo_env() { prints "/bin/sh $A" ssh "${SSH_OPTS[@]}" "${LO[@]}" 'echo "$SHELL $(id -un)"'; }
ssh_lo_python() { prints 42 ssh "${SSH_OPTS[@]}" "${LO[@]}" python3 -c "'print(6*7)'"; }
ssh_host() { # ADDR: land on the host owning ADDR
  prints "$1" ssh "${SSH_OPTS[@]}" "$A@$1" ip -4 -o addr show
}
ssh_h3_direct_refused() {
  local t0 ms
  t0=$(date +%s%N)
  fails_with "No route to host" ssh "${SSH_OPTS[@]}" "$A@$SPORE_TB_H3_ADDR" true || return
  ms=$(ms_since "$t0")
  [ "$ms" -lt 1000 ] || { echo "took $ms ms, expected an immediate error"; return 1; }
}
ssh_h3_config() { prints "$SPORE_TB_H3_ADDR" ssh -F "$SPORE_TB_SSH_CONFIG" spore-h3 ip -4 -o addr show; }
ssh_h3_proxycommand() {
  # ProxyJump (-J) would NOT pass -i/-o to the jump ssh; ProxyCommand does.
  prints "$SPORE_TB_H3_ADDR" ssh "${SSH_OPTS[@]}" \
    -o ProxyCommand="ssh ${SSH_OPTS[*]} -W %h:%p $SPORE_TB_H3_JUMP" \
    "$A@$SPORE_TB_H3_ADDR" ip -4 -o addr show
}
ssh_nested() { # ssh to FIRST, and from there (as spore-a, its own key) to SECOND
  prints "$2" ssh "${SSH_OPTS[@]}" "$A@$1" \
    "ssh -o BatchMode=yes -o ConnectTimeout=2 $A@$2 ip -4 -o addr show"
}
ssh_h1_cannot_reach_h3() {
  fails_with "unreachable" ssh "${SSH_OPTS[@]}" "$A@$SPORE_TB_H1_ADDR" \
    "ssh -o BatchMode=yes -o ConnectTimeout=2 $A@$SPORE_TB_H3_ADDR true"
}

as_a() { runuser -u "$SPORE_TB_USER_A" -- "$@"; }
sudo_nopass() { prints "$SPORE_TB_USER_B" as_a sudo -n -u "$SPORE_TB_USER_B" id -un; }
sudo_root_needs_pw() { fails_with "a password is required" as_a sudo -n -u root true; }
sudo_root_with_pw() {
  printf '%s\n' "$SPORE_TB_USER_A_PASSWORD" | prints root as_a sudo -S -p '' -u root id -un
}
su_stdin() { printf '%s\n' "$SPORE_TB_USER_B_PASSWORD" | prints "$SPORE_TB_USER_B" as_a su "$SPORE_TB_USER_B" -c 'id -un'; }
# pty_password PASSWORD WANT CMD...: run CMD on a pty (expect), answer its
# password prompt, and wait for WANT in the output.
pty_password() {
  PW=$1 WANT=$2 expect -f /dev/fd/3 "${@:3}" 3<<'EOF'
set timeout 10
spawn {*}$argv
expect -re {[Pp]assword[^:]*: ?$} { send "$env(PW)\r" } timeout { exit 2 } eof { exit 3 }
expect -ex $env(WANT) { exit 0 } timeout { exit 4 } eof { exit 5 }
EOF
}
su_pty() { pty_password "$SPORE_TB_USER_B_PASSWORD" "$SPORE_TB_USER_B" runuser -u "$SPORE_TB_USER_A" -- su "$SPORE_TB_USER_B" -c 'id -un'; }
doas_nopass() { prints "$SPORE_TB_USER_B" as_a doas -n -u "$SPORE_TB_USER_B" id -un; }
doas_root_needs_pw() { fails_with "Authentication" as_a doas -n -u root true; }
doas_root_pty() { pty_password "$SPORE_TB_USER_A_PASSWORD" "uid=0(root)" runuser -u "$SPORE_TB_USER_A" -- doas -u root id; }

# The hostctl.sh beside this script, not necessarily the env file's (that of
# the tree setup.sh last ran from): the checks test this tree's actions.
HOSTCTL="$TB_SRC/hostctl.sh"
hostctl() { "$HOSTCTL" "$@" >/dev/null; }
hostctl_status() { # HOST WANT
  local s
  s=$("$HOSTCTL" status "$1") || return
  [ "$s" = "$2" ] || { echo "status is $s, not $2"; return 1; }
}
# KIND (cut or down) h1, twice (idempotent): ssh to it times out.
h1_off_times_out() {
  local t0 ms
  hostctl "$1" spore-h1 || return
  hostctl "$1" spore-h1 || return # twice: idempotent
  hostctl_status spore-h1 "$1" || return
  t0=$(date +%s%N)
  fails_with "timed out" ssh "${SSH_OPTS[@]}" "$A@$SPORE_TB_H1_ADDR" true || return
  ms=$(ms_since "$t0")
  if [ "$ms" -lt 1500 ] || [ "$ms" -ge 5000 ]; then
    echo "took $ms ms, expected ~2000 (ConnectTimeout=2)"
    return 1
  fi
}
restore_h1() { # ACTION (restore, or up after down)
  hostctl "$1" spore-h1 || return
  hostctl "$1" spore-h1 || return
  hostctl_status spore-h1 up || return
  ssh_host "$SPORE_TB_H1_ADDR"
}
# Both kinds at once, then restore undoes both.
restore_undoes_both() {
  hostctl cut spore-h1 || return
  hostctl down spore-h1 || return
  hostctl_status spore-h1 cut,down || return
  restore_h1 restore
}

box_exec() { prints hi podman exec -i "$SPORE_TB_CONTAINER" /bin/sh -c 'echo hi'; }
box_stdin() { printf 'through-stdin' | prints through-stdin podman exec -i "$SPORE_TB_CONTAINER" cat; }
box_ulimit() { prints 20000 podman exec -i "$SPORE_TB_CONTAINER" /bin/sh -c 'ulimit -n'; }
box_nsenter() {
  local pid
  pid=$(podman container inspect -f '{{.State.Pid}}' "$SPORE_TB_CONTAINER") || return
  # shellcheck disable=SC2016 # expanded inside the container
  prints "ok $SPORE_TB_CONTAINER" nsenter -t "$pid" -m -u -i -n -p -- /bin/sh -c 'echo ok $(hostname)'
}
netns_nsenter() { prints "$SPORE_TB_H1_ADDR" nsenter --net="/run/netns/$SPORE_TB_H1_NETNS" -- ip -4 -o addr show; }
chroot_busybox() { prints ok chroot "$SPORE_TB_BUSYBOX_ROOT" /bin/sh -c 'echo ok'; }
chroot_only_busybox() { # nothing of the host leaks in: no libc, no /usr
  chroot "$SPORE_TB_BUSYBOX_ROOT" /bin/sh -c '[ ! -e /usr ] && [ ! -e /lib ] && [ -c /dev/null ]'
}
# A glibc program (coreutils echo) copied into ROOT/tmp and run there.
chroot_glibc_prog() { # ROOT
  local f=/tmp/.check-echo-$$ rc
  cp /bin/echo "$1$f" || return
  chroot "$1" "$f" glibc-ok
  rc=$?
  rm -f "$1$f"
  return "$rc"
}
chroot_glibc_runs() { prints glibc-ok chroot_glibc_prog "$SPORE_TB_GLIBC_ROOT"; }
chroot_busybox_no_glibc() { fails_with "No such file" chroot_glibc_prog "$SPORE_TB_BUSYBOX_ROOT"; }
# Like spore's first stage: ship a glibc program over stdin, store it in /tmp, run it.
box_glibc_prog() {
  # shellcheck disable=SC2016 # expanded inside the container
  prints glibc-ok podman exec -i "$SPORE_TB_CONTAINER" /bin/sh -c \
    'f=/tmp/.check-echo-$$; cat >$f && chmod 700 $f && $f glibc-ok; r=$?; rm -f $f; exit $r' </bin/echo
}
unreachable_route() { ip route show type unreachable | grep -q "^unreachable $SPORE_TB_PREFIX"; }

if [ "${1:-}" = __run ]; then
  shift
  "$@"
  exit
fi

t_start=$(date +%s%N)
failures=0
out=$(mktemp)
trap 'rm -f "$out"; "$HOSTCTL" restore spore-h1 >/dev/null 2>&1 || true' EXIT

check "env file: SPORE_TESTBED=1" test "${SPORE_TESTBED:-}" = 1
check "root netns: unreachable route $SPORE_TB_PREFIX" unreachable_route
check "ssh lo: key login" ssh_lo_key
check "ssh lo: key with passphrase (sshpass)" ssh_lo_passphrase
check "ssh lo: chatty login (banner, closed account)" ssh_lo_chatty
check "ssh lo: password auth (sshpass)" ssh_lo_password password
check "ssh lo: keyboard-interactive (sshpass)" ssh_lo_password keyboard-interactive
check "ssh lo: login shell /bin/sh" ssh_lo_env
check "ssh lo: python3 on target (Mitogen)" ssh_lo_python
check "ssh h1 by address" ssh_host "$SPORE_TB_H1_ADDR"
check "ssh h2 by address" ssh_host "$SPORE_TB_H2_ADDR"
check "ssh h3 directly: no route (immediate)" ssh_h3_direct_refused
check "ssh h3 via ProxyJump (ssh -F ssh_config)" ssh_h3_config
check "ssh h3 via ProxyCommand through h2" ssh_h3_proxycommand
check "ssh h2, then from h2 to h3 (nested)" ssh_nested "$SPORE_TB_H2_ADDR" "$SPORE_TB_H3_ADDR"
check "ssh h1, then from h1 to h2 (nested)" ssh_nested "$SPORE_TB_H1_ADDR" "$SPORE_TB_H2_ADDR"
check "h1 cannot reach h3" ssh_h1_cannot_reach_h3
check "sudo -n -u spore-b (NOPASSWD)" sudo_nopass
check "sudo -n -u root fails (password required)" sudo_root_needs_pw
check "sudo -S -u root with password" sudo_root_with_pw
check "su spore-b, password on stdin (no tty)" su_stdin
check "su spore-b, password on a pty (expect)" su_pty
check "doas -n -u spore-b (nopass)" doas_nopass
check "doas -n -u root fails (password required)" doas_root_needs_pw
check "doas -u root, password on a pty (expect)" doas_root_pty
check "hostctl cut h1: ssh times out (ConnectTimeout=2)" h1_off_times_out cut
check "ssh h2 while h1 is cut" ssh_host "$SPORE_TB_H2_ADDR"
check "hostctl restore h1: ssh works again" restore_h1 restore
check "hostctl down h1: ssh times out (ConnectTimeout=2)" h1_off_times_out down
check "ssh h2 while h1 is down" ssh_host "$SPORE_TB_H2_ADDR"
check "hostctl up h1: ssh works again" restore_h1 up
check "hostctl cut+down h1: restore undoes both" restore_undoes_both
check "podman exec -i spore-box sh -c 'echo hi'" box_exec
check "podman exec -i: stdin reaches the container" box_stdin
check "podman: ulimit -n is 20000 inside" box_ulimit
check "podman: glibc program via stdin runs in /tmp" box_glibc_prog
check "nsenter into spore-box (pid, mount, ...)" box_nsenter
check "nsenter --net into spore-h1" netns_nsenter
check "chroot busybox root: sh -c 'echo ok'" chroot_busybox
check "chroot busybox root holds only busybox" chroot_only_busybox
check "chroot busybox root: glibc program fails" chroot_busybox_no_glibc
check "chroot glibc root: glibc program runs" chroot_glibc_runs

total=$(ms_since "$t_start")
if [ "$failures" -eq 0 ]; then
  echo "check.sh: all checks passed in $total ms"
else
  echo "check.sh: $failures check(s) FAILED ($total ms)"
  exit 1
fi
