#!/usr/bin/env bash
# Remove everything testbed/setup.sh made. Idempotent. Installed Debian
# packages are left alone. Only processes the test bed started are signalled,
# each by pid: the sshds (from their pidfiles), then whatever still runs inside
# the test bed's namespaces or as the test bed's users (sessions and contexts
# that tests started through them).
set -Eeuo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STEP=start
step() {
  STEP=$1
  tb_say "$1"
}
trap 'printf "teardown.sh: FAILED in step \"%s\" (line %s: %s)\n" "$STEP" "$LINENO" "$BASH_COMMAND" >&2' ERR

t0=$(date +%s%N)
[ "$(id -u)" = 0 ] || { echo "teardown.sh: must run as root" >&2; exit 1; }

# kill_pids WHAT PID...: TERM, wait up to 2 s, then KILL what is left.
kill_pids() {
  local what=$1 p left
  shift
  [ "$#" -gt 0 ] || return 0
  echo "  stopping $what: $*"
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq 20); do
    left=()
    for p in "$@"; do tb_alive "$p" && left+=("$p"); done
    [ "${#left[@]}" -gt 0 ] || return 0
    sleep 0.1
  done
  echo "  killing $what: ${left[*]}"
  kill -KILL "${left[@]}" 2>/dev/null || true
}

step "podman container $TB_CONTAINER and image $TB_IMAGE"
if command -v podman >/dev/null; then
  if podman container exists "$TB_CONTAINER"; then
    podman rm -f -t 0 "$TB_CONTAINER" >/dev/null
    echo "  removed container"
  fi
  if podman image exists "$TB_IMAGE"; then
    podman rmi -f "$TB_IMAGE" >/dev/null
    echo "  removed image"
  fi
fi

step "sshd instances (by pidfile)"
for h in $(tb_sshd_names); do
  d=$(tb_sshd_dir "$h")
  if pid=$(tb_live_pid "$d/sshd.pid" "$d/sshd_config"); then
    kill_pids "sshd $h" "$pid"
  fi
  rm -f "$d/sshd.pid"
done

step "processes left in the test bed's namespaces"
for h in "${TB_HOSTS[@]}"; do
  ns=$(tb_ns "$h")
  if [ -e "/run/netns/$ns" ]; then
    mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null || true)
    kill_pids "processes in $ns" "${pids[@]}"
  fi
done

step "processes left running as $TB_USER_A / $TB_USER_B / $TB_USER_C"
for u in "$TB_USER_A" "$TB_USER_B" "$TB_USER_C"; do
  if getent passwd "$u" >/dev/null; then
    mapfile -t pids < <(pgrep -u "$u" || true)
    kill_pids "processes of $u" "${pids[@]}"
  fi
done

step "network namespaces, veths, bridge $TB_BRIDGE, unreachable route"
for h in "${TB_HOSTS[@]}"; do
  ns=$(tb_ns "$h")
  if [ -e "/run/netns/$ns" ]; then
    ip netns del "$ns"
    echo "  deleted $ns"
  fi
  ip link del "sp-$h" 2>/dev/null || true
done
if ip link show "$TB_BRIDGE" >/dev/null 2>&1; then
  ip link del "$TB_BRIDGE"
  echo "  deleted $TB_BRIDGE"
fi
if ip route show type unreachable | grep -q "^unreachable $TB_PREFIX"; then
  ip route del unreachable "$TB_PREFIX"
  echo "  deleted unreachable route $TB_PREFIX"
fi

step "sudo and doas rules"
rm -f /etc/sudoers.d/spore-testbed
if [ -f /etc/doas.conf ] && grep -q '^# BEGIN spore-testbed' /etc/doas.conf; then
  tmp=$(mktemp)
  awk '/^# BEGIN spore-testbed/{skip=1;next} /^# END spore-testbed/{skip=0;next} !skip' /etc/doas.conf >"$tmp"
  if grep -q '[^[:space:]]' "$tmp"; then
    install -m 0600 -o root -g root "$tmp" /etc/doas.conf
    echo "  removed our block from /etc/doas.conf"
  else
    rm -f /etc/doas.conf
    echo "  removed /etc/doas.conf (held only our block)"
  fi
  rm -f "$tmp"
fi

step "users $TB_USER_A, $TB_USER_B and $TB_USER_C"
for u in "$TB_USER_A" "$TB_USER_B" "$TB_USER_C"; do
  if getent passwd "$u" >/dev/null; then
    userdel "$u"
    echo "  deleted user $u"
  fi
  if getent group "$u" >/dev/null; then groupdel "$u"; fi
  rm -rf "/home/${u:?}" "/var/mail/${u:?}"
done

step "state dir $TB_DIR"
rm -rf "$TB_DIR"

t1=$(date +%s%N)
tb_say "teardown done in $(((t1 - t0) / 1000000)) ms"
