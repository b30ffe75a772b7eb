#!/usr/bin/env bash
# Cut a test bed host off the network, or restore it. Idempotent.
#
#   hostctl.sh cut spore-h1       # every packet in or out of h1 (but its own
#                                 # loopback) is silently dropped: new
#                                 # connections time out, open ones hang
#   hostctl.sh restore spore-h1   # undo
#   hostctl.sh status spore-h1    # prints "cut" or "up"
#
# The host may be given as spore-h1 or h1. Works with iptables inside the
# host's network namespace, so the root namespace's rules are never touched.
set -Eeuo pipefail
# shellcheck source=common.sh source-path=SCRIPTDIR
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
  echo "usage: $0 cut|restore|status spore-h1|spore-h2|spore-h3" >&2
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

case $action in
  cut)
    for r in "${RULES[@]}"; do
      # shellcheck disable=SC2086 # the rule is meant to split into words
      ipt -C $r 2>/dev/null || ipt -I $r
    done
    echo "$ns: cut"
    ;;
  restore)
    for r in "${RULES[@]}"; do
      # shellcheck disable=SC2086
      while ipt -C $r 2>/dev/null; do ipt -D $r; done
    done
    echo "$ns: restored"
    ;;
  status)
    # shellcheck disable=SC2086
    if ipt -C ${RULES[0]} 2>/dev/null; then echo cut; else echo up; fi
    ;;
  *) usage ;;
esac
