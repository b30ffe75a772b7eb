# spore stage 0 (run as: sh -c "$SCRIPT" NAME STAGE-HASH IMAGE-HASH); protocol: docs/PROTOCOL.md
n=$0 s=$1 i=$2 C=${XDG_CACHE_HOME:-$HOME/.cache}/spore
{ { [ -d "$C" ]||mkdir -p -m 700 "$C";}&&set -f&&set -- $(ls -ldn "$C")&&[ "$3" = "$(id -u)" ]&&case $1 in drwx------|drwx------.);;*)false;;esac&&command -v sha256sum;}>/dev/null 2>&1||C=
set +f;t=;e=
[ "$C" ]&&t=$(cat "$C/$s" 2>/dev/null)&&[ "$(printf "%s\n" "$t"|sha256sum)" = "$s  -" ]&&exec /bin/sh -c "$t" "$n" "$i" "$C"
echo SPORE-STAGE;t=;while IFS= read -r l;do [ "$l" = SPORE-END ]&&e=1&&break;t="$t$l
";done
[ "$e" ]||{ echo "SPORE-FAIL first stage truncated";exit 1;}
[ "$C" ]&&{ printf %s "$t" >"$C/$s.$$"&&mv -f "$C/$s.$$" "$C/$s"||rm -f "$C/$s.$$";}
exec /bin/sh -c "$t" "$n" "$i" "$C"
