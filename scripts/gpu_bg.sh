#!/usr/bin/env bash
# Detached jobs that outlive one device call (the machine stays warm between chained calls).
#   bash scripts/gpu_bg.sh start NAME CMD...   CMD under setsid; output runs/bg/NAME.log, exit code runs/bg/NAME.rc
#   bash scripts/gpu_bg.sh wait SECONDS        until every started job wrote its .rc, or SECONDS pass
#   bash scripts/gpu_bg.sh pack DIR...         tar runs/bg and DIRs into $OUT/logs.tgz  (OUT: the device call's output folder)
D=runs/bg; mkdir -p $D
case $1 in
start) name=$2; shift 2; touch $D/$name.started
  setsid nohup bash -c "$*; echo \$? > $D/$name.rc" > $D/$name.log 2>&1 < /dev/null & ;;
wait) end=$((SECONDS + $2))
  while [ $SECONDS -lt $end ]; do
    left=0; for f in $D/*.started; do [ -f "${f%.started}.rc" ] || left=$((left + 1)); done
    [ $left -eq 0 ] && break; sleep 5
  done
  for f in $D/*.started; do n=${f%.started}; echo "$(basename $n): rc=$(cat $n.rc 2>/dev/null || echo running)"; done ;;
pack) shift; tar czf $OUT/logs.tgz $D "$@" 2>/dev/null; ls -la $OUT ;;
esac
