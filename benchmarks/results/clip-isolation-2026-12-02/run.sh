#!/bin/bash
# ABBA pairs: isolated vs --no-isolate, 3 ghost clips, default settings (32 frames/clip, default engine)
cd "${1:?a folder holding clips/ (links to ghost_elon, ghost_khabenskii, ghost_orig .webm)}"
PY=${PY:-python}
mkdir -p bench
for m in iso noiso noiso iso iso noiso; do
  n=$((n+1)); out=bench/out-$n-$m; rm -rf $out
  extra=""; [ $m = noiso ] && extra=--no-isolate
  l0=$(cut -d' ' -f1 /proc/loadavg)
  s=$(date +%s.%N)
  $PY -m scanner.cli run clips --quiet --no-report --out $out $extra > bench/log-$n-$m 2>&1
  rc=$?
  e=$(date +%s.%N)
  l1=$(cut -d' ' -f1 /proc/loadavg)
  echo "$n $m rc=$rc wall=$(echo "$e - $s" | bc) load_before=$l0 load_after=$l1 $(grep -o 'in [0-9.]* s (' bench/log-$n-$m)" >> bench/results.txt
done
