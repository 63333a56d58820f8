#!/usr/bin/env bash
# Runs THERE, on the lent GPU machine, after the transfer calls that plan_calls.py prints:
# reassembles the chunked wheels in /root/dfscan-wheels, checks every sha256 against manifest.tsv,
# installs them all with pip (no index, no dependency resolution) into /root/site, and smoke-tests
# DALI's GPU decoder. Idempotent: a wheel already whole and verified is not reassembled again.
#
#   bash benchmarks/gpu/install_wheels.sh            # there
#   bash benchmarks/gpu/install_wheels.sh --verify   # reassemble + sha256 only (also works here, on a copy)
#
# Afterwards every command there starts with: export PYTHONPATH=/root/site:$PWD
# (run_suite.sh does it itself).
set -euo pipefail

W=${DFSCAN_WHEELS:-/root/dfscan-wheels}
SITE=${DFSCAN_SITE:-/root/site}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
VERIFY_ONLY=${1:-}

cd "$W" 2>/dev/null || { echo "INSTALL FAILED: no $W (the transfer calls did not land here: a fresh machine? start again from call 1)"; exit 2; }
[[ -f manifest.tsv ]] || { echo "INSTALL FAILED: no $W/manifest.tsv"; exit 2; }

wheels=() missing=() bad=()
while IFS=$'\t' read -r file bytes sha pieces; do
    [[ -z "$file" || "$file" == \#* ]] && continue
    wheels+=("$file")
    if [[ -f "$file" ]] && [[ "$(stat -c %s "$file")" == "$bytes" ]] \
            && echo "$sha  $file" | sha256sum -c --status; then
        continue  # whole and verified already
    fi
    IFS=, read -ra parts <<<"$pieces"
    gone=0
    for p in "${parts[@]}"; do [[ -f "$p" ]] || { missing+=("$p"); gone=1; }; done
    (( gone )) && continue
    if [[ "${parts[*]}" != "$file" ]]; then
        cat "${parts[@]}" > "$file.tmp" && mv "$file.tmp" "$file"
    fi
    if echo "$sha  $file" | sha256sum -c --status; then
        [[ "${parts[*]}" != "$file" ]] && rm -f "${parts[@]}"
    else
        bad+=("$file")
    fi
done < manifest.tsv

if (( ${#missing[@]} )); then
    echo "INSTALL FAILED: ${#missing[@]} pieces never arrived (re-send the calls that carry them):"
    printf '  %s\n' "${missing[@]}"
    exit 3
fi
if (( ${#bad[@]} )); then
    echo "INSTALL FAILED: sha256 mismatch after reassembly: ${bad[*]}"
    exit 4
fi
echo "verified ${#wheels[@]} wheels ($(du -cb "${wheels[@]}" | tail -1 | cut -f1) bytes) against manifest.tsv"
[[ "$VERIFY_ONLY" == "--verify" ]] && exit 0

t0=$SECONDS
rm -rf "$SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --disable-pip-version-check \
    --target "$SITE" "${wheels[@]/#/$W/}"
echo "installed into $SITE in $((SECONDS - t0)) s ($(du -sm "$SITE" | cut -f1) MB)"

export PYTHONPATH=$SITE:$REPO
python3 "$REPO/benchmarks/gpu/suite_tools.py" env && echo "INSTALL OK" || { echo "INSTALL FAILED: the smoke test (above)"; exit 5; }
