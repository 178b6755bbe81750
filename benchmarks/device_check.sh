#!/usr/bin/env bash
# The GPU check, one prepared script of about 5-8 minutes on a machine with a CUDA device and this repository
# installed (pip install -e '.[test]'): the GPU's name, the tests marked `cuda` (tests/test_cuda.py), then the
# saliency and train-step benchmarks of docs/design.md §9 on cct_7_3x1 at batch 128, in float32 and bfloat16.
# Everything goes to OUTPUT_DIR (default ./device_check): device.txt, tests.log and one JSON file per benchmark, which
# BENCHMARKS.md quotes with the GPU's name.
#
#     bash benchmarks/device_check.sh [OUTPUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-./device_check}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python - <<'PY' | tee "$out/device.txt"
import torch, timm
if not torch.cuda.is_available():
    raise SystemExit('device_check.sh needs a CUDA device: torch.cuda.is_available() is False')
print(f'GPU: {torch.cuda.get_device_name()} (compute capability {torch.cuda.get_device_capability()}), '
      f'torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, timm {timm.__version__}')
PY
python -m pytest -m cuda -p no:cacheprovider -q -rs tests/test_cuda.py 2>&1 | tee "$out/tests.log" || status=$?
common=(--device cuda --batch-size 128 --repeats 10 --warmup 3)
python benchmarks/saliency.py --model cct_7_3x1_htm "${common[@]}" --json > "$out/saliency.json"
python benchmarks/train_step.py --model cct_7_3x1 "${common[@]}" --memory-batch-size 128 --easy-fraction 0.5 --rho 0 \
    --json > "$out/train_step.json"
python benchmarks/train_step.py --model cct_7_3x1 "${common[@]}" --memory-batch-size 128 --easy-fraction 0.5 --rho 0 \
    --amp --amp-dtype bfloat16 --json > "$out/train_step_bf16.json"
echo "device check written to $out"
exit "${status:-0}"
