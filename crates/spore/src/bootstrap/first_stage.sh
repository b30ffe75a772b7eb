# spore first stage (run as: sh -c "$SCRIPT" NAME [HASH CACHE]); protocol: docs/PROTOCOL.md
F(){ set -f;set -- $*;printf "SPORE-FAIL %s\n" "$*";exit 1;}
Z=;command -v unzstd >/dev/null&&Z=unzstd;command -v zstd >/dev/null&&Z=zstd
S=;K=;if [ "$2" ]&&command -v sha256sum >/dev/null;then S=$2/$1;K=" cache=miss"
if [ "$(sha256sum 2>/dev/null <"$S")" = "$1  -" ];then K=" cache=hit";else rm -f "$S";n=0;for f in $(ls -t "$2");do case $f in *[!0-9a-f]*);;*)n=$((n+1));[ $n -lt 8 ]||rm -f "$2/$f";;esac;done;fi;fi
printf "SPORE-READY 1 %s %sraw%s\n" "$(uname -sm)" "${Z:+zstd,}" "$K"
set --;for d in "$XDG_RUNTIME_DIR" /dev/shm /tmp /var/tmp "$HOME";do [ -d "$d" ]&&set -- "$@" "$d";done
command -v perl >/dev/null&&exec perl -e "use Fcntl;use Config;(\$n,\$e,\$z,\$D,\$S,@d)=@ARGV;\$b=\"\";fcntl(STDIN,F_SETFL,fcntl(STDIN,F_GETFL,0)&~O_NONBLOCK);
sub F{print\"SPORE-FAIL \".join(\" \",split\" \",\"@_\").\"\n\";exit 1}
if(\$e eq\"\"){\$h=\"\";while(1){sysread(STDIN,\$c,1)or\$c=\"\";last if\$c eq\"\n\";\$c=~/^[a-z0-9 ]\$/ or F(\"bad header \$h\");\$h.=\$c;length\$h<=20 or F(\"bad header \$h\")}
\$h=~/^([a-z0-9]+) (0|[1-9][0-9]*)( s)?\$/ or F(\"bad header \$h\");(\$e,\$z,\$K)=(\$1,\$2,\$3)}
\$e eq\"raw\"or\$e eq\"zstd\"or\$e eq\"cached\"&&\$S or F(\"unknown encoding \$e\");\$e eq\"zstd\"&&\$D eq\"\"&&F(\"no zstd decoder\");
while(length\$b<\$z){sysread(STDIN,\$b,\$z-length\$b,length\$b)or F(sprintf\"payload truncated: got %d of %d bytes\",length\$b,\$z)}
if(\$e eq\"zstd\"){pipe ER,EW;\$p=open(O,\"-|\")//F(\"fork: \$!\");if(!\$p){open STDERR,\">&EW\";open(Z,\"|-\",\$D,\"-dcq\")or exit 1;print Z \$b;close Z;exit!!\$?}
close EW;local\$/;\$b=<O>;\$m=<ER>;close O;\$? and F(\"decode failed: \$m\")}
if(\$e eq\"cached\"){local\$/;open(C,\"<\",\$S)or F(\"cache entry \$S: \$!\");\$b=<C>;close C}
if(\$K&&\$S){\$t=\"\$S.\$\$\";open(C,\">\",\$t)&&print(C \$b)&&close(C)&&rename(\$t,\$S)or unlink\$t}
\$_=\$Config{archname};\$N=/^x86_64/?319:/^(aarch64|riscv)/?279:/^i.86/?356:/^arm/?385:0;
for\$w(\"memfd(perl)\",@d){\$t=\"\";\$!=0;
if(\$w eq\"memfd(perl)\"){\$f=\$N?syscall(\$N,\$k=\"spore\",17):-1;\$f=syscall(\$N,\$k,1)if\$f<0&&\$!==22;\$f<0||open(H,\">&=\",\$f)or\$f=-1}
else{\$t=sprintf\"%s/.spore-%d-%d\",\$w,\$\$,rand 1e9;\$f=sysopen(H,\$t,O_WRONLY|O_CREAT|O_EXCL,0700)?fileno H:-1}
if(\$f<0){push@R,\"\$w: create failed (\".(\$!||\"unsupported\").\")\";next}
chmod 0700,H;for(\$o=0;\$o<length\$b;\$o+=\$r){\$r=syswrite(H,\$b,1<<20,\$o)or last}
if(\$o<length\$b){push@R,\"\$w: write failed (\$!)\";close H;unlink\$t if\$t;next}
if(\$t){close H;open(H,\"<\",\$t);unlink\$t;\$f=fileno H}
exec{\"/proc/self/fd/\$f\"}\$n,\"--spore-child\";push@R,\"\$w: exec failed (\$!)\";close H}
F(join\"; \",@R)" -- "$0" "" "" "$Z" "$S" "$@"
command -v python3 >/dev/null&&exec python3 -Esc "import os,sys,signal as G
a=sys.argv;n,e,z,D,L,Q=a[1:7];k=0;R=[];b=bytearray();M=\"memfd(python3)\";E=os.environ;os.set_blocking(0,True)
if L:E[\"LC_CTYPE\"]=L[1:]
else:E.pop(\"LC_CTYPE\",0)
def F(m):os.write(1,(\"SPORE-FAIL \"+\" \".join(m.split())+\"\n\").encode());os._exit(1)
if not e:
 h=\"\"
 while 1:
  c=os.read(0,1).decode(\"latin1\")
  if c==\"\n\":break
  if len(c)<1 or c not in \"abcdefghijklmnopqrstuvwxyz0123456789 \":F(\"bad header \"+h)
  h+=c
  if len(h)>20:F(\"bad header \"+h)
 e,_,z=h.partition(\" \");z,_,k=z.partition(\" \")
 if not z.isdigit() or z[0]==\"0\"and z!=\"0\" or not e or k not in(\"\",\"s\")or _ and not k:F(\"bad header \"+h)
 if e not in(\"raw\",\"zstd\")and(e!=\"cached\"or not Q):F(\"unknown encoding \"+e)
 if e==\"zstd\"and not D:F(\"no zstd decoder\")
z=int(z)
while len(b)<z:
 c=os.read(0,min(z-len(b),1<<20))
 if not c:F(\"payload truncated: got %d of %d bytes\"%(len(b),z))
 b+=c
if e==\"zstd\":
 import subprocess as S;p=S.run([D,\"-dcq\"],input=b,stdout=-1,stderr=-1)
 if p.returncode:F(\"decode failed: \"+p.stderr.decode(errors=\"replace\"))
 b=p.stdout
if e==\"cached\":
 try:b=open(Q,\"rb\").read()
 except OSError as x:F(\"cache entry %s: %s\"%(Q,x.strerror))
if k and Q:
 t=Q+\".%d\"%os.getpid()
 try:
  with open(t,\"wb\")as o:o.write(b)
  os.rename(t,Q)
 except OSError:
  try:os.unlink(t)
  except OSError:pass
for s in G.SIGPIPE,G.SIGXFSZ:G.signal(s,G.SIG_DFL)
for w in[M]+a[7:]:
 s=\"create\";t=0;f=-1
 try:
  if w is M:
   try:f=os.memfd_create(\"spore\",17)
   except OSError as x:
    if x.errno!=22:raise
    f=os.memfd_create(\"spore\",1)
  else:u=\"%s/.spore-%d-%s\"%(w,os.getpid(),os.urandom(6).hex());f=os.open(u,os.O_WRONLY|os.O_CREAT|os.O_EXCL,448);t=u
  s=\"write\";os.fchmod(f,448);m=memoryview(b)
  while m:m=m[os.write(f,m):]
  if t:os.close(f);f=-1;f=os.open(t,0);os.unlink(t);t=0
  s=\"exec\";os.execve(f,[n,\"--spore-child\"],E)
 except Exception as x:R.append(\"%s: %s failed (%s)\"%(w,s,getattr(x,\"strerror\",0)or x))
 if t:os.unlink(t)
 if f>=0:os.close(f)
F(\"; \".join(R))" "$0" "" "" "$Z" "${LC_CTYPE+x}$LC_CTYPE" "$S" "$@"
h=;while c=$(dd bs=1 count=1 2>/dev/null;echo .);c=${c%.};[ "$c" != "
" ];do case $c in [a-z0-9\ ]);;*)F "bad header $h";;esac;h=$h$c;[ ${#h} -le 20 ]||F "bad header $h";done
e=${h%% *};z=${h#* };k=;case $z in *" s")k=1;z=${z% s};;esac
case $z in ""|0?*|*[!0-9]*)F "bad header $h";;esac
case $e in raw);;zstd)[ "$Z" ]||F "no zstd decoder";;cached)[ "$S" ]||F "unknown encoding $e";;*)F "unknown encoding $e";;esac
case $(head --version 2>&1) in *GNU*)R(){ head -c $z;};;*)if dd iflag=fullblock count=0 </dev/null 2>/dev/null;then R(){ [ $z -lt 4096 ]||dd bs=4096 count=$((z/4096)) iflag=fullblock 2>/dev/null;dd bs=1 count=$((z%4096)) 2>/dev/null;};else R(){ dd bs=1 count=$z 2>/dev/null;};fi;esac
T(){ f=$(mktemp "$1/.spore.XXXXXX" 2>/dev/null)||{ f=$1/.spore.$$$2;(set -C;: >"$f")2>/dev/null;};}
M="memfd: no python3 or perl";[ -d /proc/self/fd ]||F "$M; no /proc/self/fd (mount /proc there)"
p=;for d;do T "$d" p&&p=$f&&break;done
[ "$p" ]||F "$M; no writable dir"
if [ $e = cached ];then cat "$S" >"$p"||{ rm -f "$p";F "cache entry $S: cannot copy it to ${p%/*}";};e=raw
else R >"$p"||{ rm -f "$p";F "$M; cannot store payload in ${p%/*}";};s=$(($(wc -c <"$p")))
[ $s = $z ]||{ rm -f "$p";F "payload truncated: got $s of $z bytes";};fi
W(){ if [ $e = raw ];then cat "$p";else $Z -dcq <"$p";fi;}
[ $e = raw ]||m=$($Z -dcq <"$p" 2>&1 >/dev/null)||{ rm -f "$p";F "decode failed: $m";}
for d;do if T "$d" x;then if W >"$f"&&chmod 700 "$f"&&exec 9<"$f";then [ "$k" ]&&[ "$S" ]&&{ cat "$f" >"$S.$$"&&mv -f "$S.$$" "$S"||rm -f "$S.$$";k=;};rm -f "$f"
r=$(/proc/self/fd/9 --spore-probe </dev/null 2>&1)&&[ "$r" = spore-probe-ok ]&&rm -f "$p"&&exec /proc/self/fd/9 --spore-child
M="$M; $d: exec failed (${r##*: })";exec 9<&-;else rm -f "$f";M="$M; $d: write failed";fi;else M="$M; $d: create failed";fi;done
rm -f "$p";F "$M"
