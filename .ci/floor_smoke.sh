#!/usr/bin/env bash
# The dependency floors of setup.cfg, smoke-tested: a second environment holding exactly the declared minimum of
# every dependency (`name>=X` installed as `name==X`) installs the package, imports the zoo, trains the quickstart
# for one epoch, resumes it for a second, validates the result and runs the Hub and shipped-weights tests (the code
# that leans on huggingface_hub and safetensors). torch and torchvision come from the calling
# environment (their floors are the tested versions, so nothing large is downloaded); the rest are installed.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python - > "$work/floors.txt" <<'PY'
import configparser
import re
config = configparser.ConfigParser()
config.read('setup.cfg')
for line in config['options']['install_requires'].split():
    match = re.fullmatch(r'([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)', line)
    if match is None:
        raise SystemExit(f'setup.cfg install_requires: {line!r} is not of the form name>=floor')
    print(f'{match[1]}=={match[2]}')
PY
python -m venv "$work/venv"
floor_python="$work/venv/bin/python"
# the calling environment's packages come after the floor environment's own (torch, torchvision and the test tools
# are found there; what the floors install shadows them), whether the caller is a venv or the system Python
python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"]); print(sysconfig.get_paths()["platlib"])' \
    > "$("$floor_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/calling_environment.pth"
"$floor_python" -m pip install --quiet --disable-pip-version-check -c "$work/floors.txt" -r "$work/floors.txt"
"$floor_python" -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
"$floor_python" - "$work/floors.txt" <<'PY'
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    name, floor = line.strip().split('==')
    if version(name).split('+')[0] != floor:
        raise SystemExit(f'floor environment: {name} is {version(name)}, expected the floor {floor}')
print('floor environment:', ', '.join(line.strip() for line in open(sys.argv[1])))
import models  # noqa: F401  (registers the zoo)
import timm
assert timm.is_model('cct_2_3x2_htm_vtm')
PY
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2
"$floor_python" train.py --epochs 1 --output "$work/out" --experiment floor
"$floor_python" train.py --resume "$work/out/train/floor/last.pth.tar" --epochs 2 --output "$work/out" --experiment floor
"$floor_python" validate.py --checkpoint "$work/out/train/floor/last.pth.tar"
# (transformers is no dependency, and the one tested needs a newer huggingface_hub than the floor)
"$floor_python" -m pytest -q -p no:cacheprovider tests/test_hub.py tests/test_shipped.py -k 'not transformers'
echo "floor smoke: passed"
