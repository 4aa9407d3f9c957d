#!/usr/bin/env bash
# The GPU plan (issue 18, item 5): one prepared script for 15 minutes of one modern GPU, about 10 of them computing.
#
# Here, once (copies the CelebA faces, 25 MiB, into a git-ignored folder that the device tool carries):
#     mkdir -p .gpu_data && cp -r ../shared/data/celeba .gpu_data/ && echo /.gpu_data/ >> .git/info/exclude
# On the GPU machine (the device tool's `run`, carry [".gpu_data"], timeout_s 600):
#     bash experiments/gpu15.sh .gpu_data "$OUT"
# Back here: the archive it wrote becomes the committed one, and its measured rates replace gpu.json's guesses:
#     cp -r FILES_AT/archive experiments/archive/gpu15
#     python experiments/measured_rates.py --rates FILES_AT/rates.json --into experiments/configs/gpu.json
#     python -m equinv.experiments results --budget experiments/configs/gpu15.json --data-root .gpu_data \
#         --out /tmp/equinv_gpu15 --results docs/results_gpu15.md
# (the archive restores only steps whose commands are the plan's own: same data root and run root as on the GPU)
#
# It runs the plan of experiments/configs/gpu15.json (the equivariance-term preset's bf16 MoCo on the CelebA faces, then
# the 5-point regression and matching of its hypercolumn, of a 256-D projection and of a random network) through
# `python -m equinv.experiments reproduce`, resumable like every plan, then measures the rates. The run root (feature
# caches, weights) stays in /tmp; only the archive (records, logs, small weights), the page and rates.json go to OUT.
set -euo pipefail
DATA=${1:?usage: gpu15.sh DATA_ROOT OUT}
OUT=${2:?usage: gpu15.sh DATA_ROOT OUT}
PY=${PYTHON:-python3}
RUN=${GPU15_RUN:-/tmp/equinv_gpu15}
STEPS=faces_dense_pretrain,faces_regress_dense_hc,faces_regress_random,faces_match_dense_hc,faces_match_random,faces_dense_project_d256,faces_match_dense_proj_d256
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$OUT/device.txt"
status=0
"$PY" -m equinv.experiments reproduce --budget experiments/configs/gpu15.json --data-root "$DATA" --out "$RUN" \
    --archive "$OUT/archive" --results "$OUT/results.md" --only "$STEPS" 2>&1 | tee "$OUT/reproduce.log" || status=$?
"$PY" experiments/measured_rates.py --run "$RUN" --budget experiments/configs/gpu15.json --data-root "$DATA" \
    --device "$(tail -1 "$OUT/device.txt")" > "$OUT/rates.json"
cat "$OUT/rates.json"
exit "$status"
