#!/usr/bin/env bash
# Cut a test bed host off the network, or restore it. Idempotent.
#
#   hostctl.sh cut spore-h1       # silent drop: every packet in or out of h1
#                                 # (but its own loopback) is dropped by
#                                 # iptables; new connections time out, open
#                                 # ones hang
#   hostctl.sh down spore-h1      # link down: every link of h1 but its
#                                 # loopback is set down, as if its cables
#                                 # were pulled
#   hostctl.sh up spore-h1        # undo `down` (leaves a `cut` in place)
#   hostctl.sh restore spore-h1   # undo both `cut` and `down`
#   hostctl.sh status spore-h1    # prints "cut", "down", "cut,down" or "up"
#
# The host may be given as spore-h1 or h1. Works only inside the host's
# network namespace (iptables there, its own ends of its veths), so the root
# namespace's rules and links are never touched. Cutting h2 either way also
# cuts h3 off, which is reachable only through h2.
set -Eeuo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  echo "usage: $0 cut|down|up|restore|status spore-h1|spore-h2|spore-h3" >&2
  exit 2
}
[ "$#" -eq 2 ] || usage
[ "$(id -u)" = 0 ] || { echo "$0: must run as root" >&2; exit 1; }
action=$1
h=${2#spore-}
case " ${TB_HOSTS[*]} " in *" $h "*) ;; *) usage ;; esac
ns=$(tb_ns "$h")
[ -e "/run/netns/$ns" ] || { echo "$0: no namespace $ns (run testbed/setup.sh)" >&2; exit 1; }

ipt() { ip netns exec "$ns" iptables -w "$@"; }
RULES=("INPUT ! -i lo -j DROP" "OUTPUT ! -o lo -j DROP")

is_cut() {
  # shellcheck disable=SC2086 # the rule is meant to split into words
  ipt -C ${RULES[0]} 2>/dev/null
}

# The host's links but loopback: "NAME FLAGS" lines, e.g. "eth0 <BROADCAST,UP>"
# (a veth is listed as "eth0@if45"; the peer suffix is cut off).
host_links() {
  ip -n "$ns" -o link show | awk -F': ' '$2 != "lo" { split($2, n, "@"); split($3, f, " "); print n[1], f[1] }'
}

# Whether any of the host's links is administratively down (set down by
# `down`; a link that is up but has lost its peer's carrier does not count).
is_down() {
  host_links | awk '$2 !~ /[<,]UP[,>]/ { found = 1 } END { exit !found }'
}

set_links() { # up|down
  local name _flags
  while read -r name _flags; do
    ip -n "$ns" link set dev "$name" "$1"
  done < <(host_links)
}

case $action in
  cut)
    for r in "${RULES[@]}"; do
      # shellcheck disable=SC2086
      ipt -C $r 2>/dev/null || ipt -I $r
    done
    echo "$ns: cut"
    ;;
  down)
    set_links down
    echo "$ns: down"
    ;;
  up)
    set_links up
    echo "$ns: up"
    ;;
  restore)
    for r in "${RULES[@]}"; do
      # shellcheck disable=SC2086
      while ipt -C $r 2>/dev/null; do ipt -D $r; done
    done
    set_links up
    echo "$ns: restored"
    ;;
  status)
    kinds=()
    if is_cut; then kinds+=(cut); fi
    if is_down; then kinds+=(down); fi
    if [ "${#kinds[@]}" -eq 0 ]; then echo up; else (IFS=,; echo "${kinds[*]}"); fi
    ;;
  *) usage ;;
esac
