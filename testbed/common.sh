# shellcheck shell=bash disable=SC2034
# Shared names, addresses and helpers for the spore test bed scripts.
# Sourced by setup.sh, teardown.sh, check.sh and hostctl.sh; not run directly.
#
# Everything the test bed makes lives under $TB_DIR (override with
# SPORE_TESTBED_DIR), except what cannot: the users spore-a and spore-b,
# /etc/sudoers.d/spore-testbed, a marked block in /etc/doas.conf, the network
# namespaces spore-h1..3, the bridge spore-br0 with its veths, the
# `unreachable` route for $TB_PREFIX, and the podman container and image.

TB_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TB_DIR=${SPORE_TESTBED_DIR:-/var/lib/spore-testbed}
TB_ENV="$TB_DIR/env"

# Users (ssh login user, and the target of sudo/su/doas) and their passwords.
TB_USER_A=spore-a
TB_USER_A_PW=spore-a-pw
TB_USER_B=spore-b
TB_USER_B_PW=spore-b-pw
TB_USER_C=spore-c     # ssh login with a chatty bash (banner, prompt)
TB_USER_C_PW=spore-c-pw
TB_KEY_PASSPHRASE=spore-key-pw

# The private sshd on loopback.
TB_LO_ADDR=127.0.0.1
TB_LO_PORT=2222
TB_KEX=curve25519-sha256,curve25519-sha256@libssh.org

# "Hosts": network namespaces, each running its own sshd on port 22.
# h1 and h2 sit on a bridge in the root namespace (10.213.0.0/24, the root
# namespace is 10.213.0.1); h3 is on a link of its own to h2 (10.213.1.0/24)
# and is reachable only through h2. The root namespace holds an `unreachable`
# route for the whole /16, so nothing for the test prefix can leave the machine.
TB_PREFIX=10.213.0.0/16
TB_BRIDGE=spore-br0
TB_BRIDGE_ADDR=10.213.0.1
TB_NS_PORT=22
TB_HOSTS=(h1 h2 h3)
TB_H1_ADDR=10.213.0.11
TB_H2_ADDR=10.213.0.12
TB_H2_INNER_ADDR=10.213.1.12
TB_H3_ADDR=10.213.1.13

# Containers and chroot.
TB_IMAGE=localhost/spore-testbed:latest
TB_CONTAINER=spore-box
TB_PODMAN_RUN_OPTS=(--runtime runc --network none
  --ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
TB_BUSYBOX_ROOT="$TB_DIR/busybox-root" # static busybox and nothing else
TB_GLIBC_ROOT="$TB_DIR/glibc-root"     # busybox + the host's glibc runtime

TB_KEY="$TB_DIR/keys/id_ed25519"
TB_KEY_PW="$TB_DIR/keys/id_ed25519_pw"
TB_KNOWN_HOSTS="$TB_DIR/known_hosts"
TB_SSH_CONFIG="$TB_DIR/ssh_config"

tb_ns() { printf 'spore-%s' "$1"; }

# sshd instances: lo (root namespace, loopback) and one per host.
tb_sshd_names() { printf '%s\n' lo "${TB_HOSTS[@]}"; }
tb_sshd_dir() { printf '%s/sshd/%s' "$TB_DIR" "$1"; }

tb_host_addr() {
  case $1 in
    lo) printf '%s' "$TB_LO_ADDR" ;;
    h1) printf '%s' "$TB_H1_ADDR" ;;
    h2) printf '%s' "$TB_H2_ADDR" ;;
    h3) printf '%s' "$TB_H3_ADDR" ;;
    *) echo "unknown host: $1" >&2; return 1 ;;
  esac
}

tb_host_port() {
  if [ "$1" = lo ]; then printf '%s' "$TB_LO_PORT"; else printf '%s' "$TB_NS_PORT"; fi
}

# Run a command in the namespace of a host ("lo" = the root namespace).
tb_in_host() {
  local h=$1
  shift
  if [ "$h" = lo ]; then "$@"; else ip netns exec "$(tb_ns "$h")" "$@"; fi
}

# Is PID alive? A zombie is not: once its parent (ip netns exec, a test) is
# gone it waits for PID 1 to reap it, and PID 1 here may be slow to do so.
tb_alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "${st%% *}" != Z ]
}

# Print the pid in a pidfile if that process is alive and its command line
# contains MARK (so a stale pidfile never makes us signal a stranger).
tb_live_pid() {
  local pidfile=$1 mark=$2 pid
  [ -r "$pidfile" ] || return 1
  pid=$(tr -dc '0-9' <"$pidfile")
  [ -n "$pid" ] && tb_alive "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$mark" || return 1
  printf '%s' "$pid"
}

tb_say() { printf '==> %s\n' "$*"; }
