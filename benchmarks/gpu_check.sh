#!/usr/bin/env bash
# The GPU check in one command, for a machine with one CUDA GPU (about 5-8 minutes):
#   1. the tests that need CUDA,
#   2. lthbench bench --device cuda (trainer against a reference loop, batched stacks),
#   3. a short LeNet-300-100 matrix, batched on the GPU, and its report,
#   4. a short ResNet-20 matrix on cifar10-jpeg.
# Everything lands in one folder (default gpu-check/): JSON, logs, the stores and the reports.
#
#   bash benchmarks/gpu_check.sh [OUTPUT_FOLDER]
#
# The data sets are read from $LTHBENCH_DATA (or --data-root's default); nothing is downloaded.
# lthbench must be installed (pip install --no-deps --no-build-isolation -e . where the
# dependencies are already there).
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-gpu-check}")
mkdir -p "$out"
status=0

if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device is visible: this check needs a GPU" >&2
  exit 2
fi
python -c "import torch; p = torch.cuda.get_device_properties(0); print(f'GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}')" | tee "$out/device.txt"

step() {  # step NAME COMMAND...: run, time and log one step; a failure is reported and the check goes on
  local name=$1; shift
  local start=$SECONDS
  echo "== $name"
  if "$@" > "$out/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - start)) s (log: $out/$name.log)"
  else
    echo "   FAILED (exit $?) after $((SECONDS - start)) s; last lines of $out/$name.log:"
    tail -n 15 "$out/$name.log" | sed 's/^/   /'
    status=1
  fi
}

step cuda-tests python -m pytest -q -rs -p no:cacheprovider -k "cuda or gpu" tests
tail -n 3 "$out/cuda-tests.log" | sed 's/^/   /'

step bench lthbench bench --device cuda --json "$out/bench.json"
sed -n '1,40p' "$out/bench.log" | sed 's/^/   /'

cat > "$out/lenet-gpu.toml" <<TOML
[benchmark]
name = "lenet-gpu-check"
seeds = [0, 1, 2, 3, 4]
output = "$out/lenet-gpu-check"
device = "cuda"

[defaults]
dataset = "mnist"
architecture = "lenet_300_100"

[defaults.training]
optimizer = "adam"
lr = 1.2e-3
batch_size = 60
iterations = 5000
eval_every = 250
validation_size = 5000

[[experiment]]
name = "lenet"
pruner = "layerwise_magnitude"
initializer = ["original", "reinit"]

[experiment.schedule]
mode = "iterative"
rounds = 7
rate = 0.2
output_rate = 0.1
TOML
step lenet-matrix lthbench run "$out/lenet-gpu.toml" --no-download
step lenet-report lthbench report "$out/lenet-gpu-check" -o "$out/lenet-gpu-check.html" --figures "$out/figures"

cat > "$out/resnet20-gpu.toml" <<TOML
[benchmark]
name = "resnet20-gpu-check"
seeds = [0, 1]
output = "$out/resnet20-gpu-check"
device = "cuda"

[defaults]
dataset = "cifar10-jpeg"
architecture = "resnet20"

[defaults.training]
optimizer = "sgd"
lr = 0.1
momentum = 0.9
weight_decay = 1e-4
batch_size = 128
iterations = 2000
lr_milestones = [1000, 1500]
eval_every = 500
validation_size = 5000
augment = true

[[experiment]]
name = "resnet20"
pruner = "global_magnitude"
initializer = ["original", "reinit"]

[experiment.schedule]
mode = "iterative"
rounds = 2
rate = 0.2
TOML
step resnet20-matrix lthbench run "$out/resnet20-gpu.toml" --no-download
step resnet20-report lthbench report "$out/resnet20-gpu-check" -o "$out/resnet20-gpu-check.html"

python - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for store in ("lenet-gpu-check", "resnet20-gpu-check"):
    records = [json.loads(p.read_text()) for p in (out / store).glob("runs/*/record.json")]
    done = [r for r in records if r.get("status") == "done"]
    wall = sum(r.get("wall_time") or 0 for r in done)
    iterations = sum((r.get("stopped_at") or r.get("iterations") or 0) - (r.get("start_iteration") or 0) for r in done)
    print(f"{store}: {len(done)} of {len(records)} runs done; {iterations:,} training iterations, "
          f"{iterations / wall if wall else 0:,.0f} iterations/s summed over runs")
PY
echo "results in $out"
exit $status
