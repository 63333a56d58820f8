#!/usr/bin/env bash
# Runs HERE, on a CPU machine that reaches PyPI. Gets everything the lent GPU machine lacks for
# dfscan's GPU path into git-ignored folders of the repository, cut to fit the device tool:
#
#   .whl/*.whl            the wheels (cp312, manylinux x86-64), pinned below
#   .whl/*.whl.part-NN    chunks of every wheel bigger than the chunk size (split -b)
#   .whl/manifest.tsv     file, bytes, sha256, pieces (its chunks, or the wheel itself)
#   .gpu-data/            a copy of ../shared/data (realorfake, multiface, dfdc-crops): the tests
#                         and the bench read it, and ../shared does not travel
#
# Then `python3 benchmarks/gpu/plan_calls.py` prints the device calls that carry them.
#
#   bash benchmarks/gpu/fetch_wheels.sh              # download (skips files already there), split, manifest, data
#   CHUNK_MB=50 bash benchmarks/gpu/fetch_wheels.sh  # re-split smaller (the tree grew); nothing re-downloaded
#   DFSCAN_GPU_MODEL=runs/x/model.pt bash ...        # also carry a trained checkpoint (.gpu-data/model.pt)
#   NO_DATA=1 bash ...                               # wheels only
#
# What the GPU image already holds (KINDS.md, "Python packages already there") is not fetched:
# numpy, six, packaging, wheel, pyyaml, typing-extensions (the other needs of the wheels below),
# torch 2.11 cu130 with its CUDA 13 libraries, timm, onnx, onnxruntime (CPU build), pyarrow, click,
# tqdm, scikit-learn, matplotlib, pillow, pytest, pytest-xdist.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
WHL=.whl
DATA=.gpu-data
HERE=benchmarks/gpu
PY=${PYTHON:-}
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi

# name==version: one version of each (two of one name stop the whole install there).
WHEELS=(
    nvidia-dali-cuda130==2.4.0          # DALI for CUDA 13 (the image's torch is cu130, driver 580)
    nvidia-nvimgcodec-cu13==0.9.0.20    # DALI: nvidia-nvimgcodec-cu13[all]>=0.9,<0.10
    nvidia-libnvcomp-cu13==5.3.0.16     # DALI pins it exactly; nvimgcodec[all]: <6,>=5
    nvidia-nvjpeg==13.0.4.44            # nvimgcodec[all]: CUDA 13's name (nvidia-nvjpeg-cu13 is a stub); 13.0 = the driver's CUDA
    nvidia-nvjpeg2k-cu13==0.11.0.51     # nvimgcodec[all] (JPEG 2000 on the GPU)
    nvidia-nvtiff-cu13==0.8.0.82        # nvimgcodec[all] (TIFF on the GPU)
    astunparse==1.6.3                   # DALI: <=1.6.3,>=1.6.0 (needs wheel, six: on the image)
    gast==0.7.0                         # DALI: <=0.7.0,>=0.3.3
    optree==0.20.0                      # DALI (needs typing-extensions: on the image)
    nvtx==0.2.17                        # DALI (the Python nvtx package, not nvidia-nvtx)
    makefun==1.16.0                     # DALI
    libcst==1.8.6                       # DALI: ~=1.8 (needs pyyaml: on the image)
    pycocotools==2.0.11                 # dfscan (COCO annotations)
)

PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done

mkdir -p "$WHL"
echo "== downloading ${#WHEELS[@]} wheels into $WHL/ (cp312, manylinux x86-64)"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$WHL" "${WHEELS[@]}" 2>&1 | { grep -v "is ignored: it is neither" || true; }

# The files the pins resolved to, checked: one per pin, every requirement shipped or on the image.
# (Other wheels someone left in .whl/ are not shipped: only manifest.tsv's files travel.)
"$PY" "$HERE/plan_calls.py" --check-wheels "$WHL" "${WHEELS[@]}" > "$WHL/files.txt" \
    || { echo "!! wheel check failed (above)"; exit 1; }
mapfile -t FILES < "$WHL/files.txt"

# Chunk size: 64 MiB per call, less the working tree that travels with every call, less 1 MiB.
TREE=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null \
       | awk '{s+=$1} END {print s+0}')
if [[ -z "${CHUNK_MB:-}" ]]; then
    CHUNK_MB=$(( (64 * 1048576 - TREE - 1048576) / 1048576 ))
    (( CHUNK_MB > 60 )) && CHUNK_MB=60
fi
CHUNK=$(( CHUNK_MB * 1048576 ))
echo "== the working tree travelling with each call: $TREE bytes; chunks of $CHUNK_MB MiB"

rm -f "$WHL"/*.part-[0-9][0-9]
{
    printf '# file\tbytes\tsha256\tpieces\n'
    for f in "${FILES[@]}"; do
        size=$(stat -c %s "$WHL/$f")
        sha=$(sha256sum "$WHL/$f" | cut -d' ' -f1)
        if (( size > CHUNK )); then
            split -b "$CHUNK" -d -a 2 "$WHL/$f" "$WHL/$f.part-"
            pieces=$(cd "$WHL" && ls -1 "$f".part-[0-9][0-9] | paste -sd, -)
        else
            pieces=$f
        fi
        printf '%s\t%s\t%s\t%s\n' "$f" "$size" "$sha" "$pieces"
    done
} > "$WHL/manifest.tsv.tmp"
mv "$WHL/manifest.tsv.tmp" "$WHL/manifest.tsv"

if [[ -z "${NO_DATA:-}" ]]; then
    SHARED=$(cd "$ROOT/.." && pwd)/shared/data
    if [[ -d "$SHARED" ]]; then
        echo "== copying $SHARED (realorfake, multiface, dfdc-crops) into $DATA/"
        rm -rf "$DATA.tmp" && mkdir -p "$DATA.tmp"
        for d in realorfake multiface dfdc-crops; do
            if [[ -d "$SHARED/$d" ]]; then cp -a "$SHARED/$d" "$DATA.tmp/$d"; fi
        done
        if [[ -n "${DFSCAN_GPU_MODEL:-}" ]]; then
            cp "$DFSCAN_GPU_MODEL" "$DATA.tmp/model.pt"
        elif [[ -f "$DATA/model.pt" ]]; then
            cp "$DATA/model.pt" "$DATA.tmp/model.pt"  # keep one given earlier
        fi
        rm -rf "$DATA" && mv "$DATA.tmp" "$DATA"
    else
        echo "!! $SHARED is absent: no $DATA/ (the GPU tests and the bench need it)"
    fi
    git check-ignore -q "$DATA" || echo "!! $DATA/ is not git-ignored: it would travel with (and swamp) every call"
fi
git check-ignore -q "$WHL" || echo "!! $WHL/ is not git-ignored"

echo "== shipped"
total=0
while IFS=$'\t' read -r f size sha pieces; do
    [[ "$f" == \#* ]] && continue
    n=$(tr ',' '\n' <<<"$pieces" | wc -l)
    printf '%8s MB  %-3s %s\n' "$(awk -v s="$size" 'BEGIN{printf "%.1f", s/1e6}')" \
        "$( ((n > 1)) && echo "${n}x" || true)" "$f"
    total=$((total + size))
done < "$WHL/manifest.tsv"
printf '%8s MB      total of the wheels\n' "$(awk -v s=$total 'BEGIN{printf "%.1f", s/1e6}')"
if [[ -d "$DATA" ]]; then
    printf '%8s MB      %s/ (data)\n' "$(du -sb "$DATA" | awk '{printf "%.1f", $1/1e6}')" "$DATA"
fi
echo "next: python3 $HERE/plan_calls.py"
