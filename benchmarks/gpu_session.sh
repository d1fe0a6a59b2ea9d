#!/usr/bin/env bash
# Everything this project measures on a GPU, in one command that fits a short lease of one GPU machine:
#
#   OUT=gpu-results DATA=/path/with/FashionMNIST BUDGET_S=540 bash benchmarks/gpu_session.sh
#
# 1. the CUDA tests (minibatch features on the GPU, bf16 autocast, torch.compile, handlers moved between devices,
#    the generator evaluator's device restore);
# 2. benchmarks/gpu_paper_step.py: the paper's CIFAR-10 steps (fp32, bf16, compile) and IS / IS+FID of 50,000
#    generated images;
# 3. the Fashion-MNIST recipe (the paper's MNIST setting), three seeds side by side, for as many of its 300
#    epochs as the rest of BUDGET_S allows (a two-epoch probe measures the speed first; the learning rate is
#    constant in this setting, so the first E epochs of a 300-epoch run are exactly an E-epoch run).
#
# Results land in $OUT: logs, gpu_paper_step.{json,md}, and fashion_mnist_gpu.tar.gz (each run's summary.json and
# TensorBoard events; no checkpoints). Read them with benchmarks/fashion_mnist_ssl.py --gpu-runs.
set -u
OUT=${OUT:-gpu-results}
DATA=${DATA:-data}
BUDGET_S=${BUDGET_S:-540}
START=$(date +%s)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1
python -c "import torch, ignite; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ignite', ignite.__version__)" >> "$OUT/device.txt" 2>&1

echo "== CUDA tests ($(left) s left)"
timeout 150 python -m pytest -q -p no:cacheprovider tests/test_cuda.py "tests/test_inception.py::test_generator_scoring_restores_device" \
  2>&1 | tail -25 | tee "$OUT/cuda_tests.log"

echo "== paper steps and IS/FID ($(left) s left)"
timeout 200 python benchmarks/gpu_paper_step.py --modes fp32,bf16,compile --iterations 100 --warmup 10 \
  --output "$OUT/gpu_paper_step.json" > "$OUT/gpu_paper_step.log" 2>&1
tail -20 "$OUT/gpu_paper_step.log"

echo "== Fashion-MNIST ($(left) s left)"
runs=fm_runs; rm -rf "$runs"; mkdir -p "$runs"
common=(--data-dir "$DATA" --device cuda --no-progress --threads 1 --eval-every 1 --image-every 100000)
probe_start=$(date +%s)
python recipes/fashion_mnist_ssl.py "${common[@]}" --epochs 2 --seed 1 --seed-data 1 --output-dir "$runs/probe" \
  > "$OUT/fashion_probe.log" 2>&1
probe=$(( $(date +%s) - probe_start ))
remaining=$(( $(left) - 25 ))
# Two epochs took $probe s, startup included; three processes side by side run each a little slower.
epochs=$(python -c "print(max(1, int(($remaining - 15) / (1.5 * max($probe - 8, 1) / 2))))")
echo "probe: 2 epochs in ${probe} s; running 3 seeds for $epochs epochs" | tee -a "$OUT/fashion_probe.log"
for seed in 1 2 3; do
  timeout $(( remaining > 30 ? remaining : 30 )) python recipes/fashion_mnist_ssl.py "${common[@]}" \
    --epochs "$epochs" --seed "$seed" --seed-data "$seed" --output-dir "$runs/seed$seed" > "$OUT/fashion_seed$seed.log" 2>&1 &
done
wait
tar czf "$OUT/fashion_mnist_gpu.tar.gz" --exclude=checkpoints "$runs"
echo "== done in $(( $(date +%s) - START )) s"
