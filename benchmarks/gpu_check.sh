#!/usr/bin/env bash
# The checks a GPU session owes after a change of the training code, in one command sized for one short lease
# (about 9.5 minutes of a 15-minute device budget, the machine's start included):
#
#   OUT=gpu-check DATA=/path/with/FashionMNIST BUDGET_S=560 bash benchmarks/gpu_check.sh
#
# 1. the CUDA tests: the graph-captured step against the eager one, the capturable ReferenceAdam against the host
#    one, the device-resident loader, the fast minibatch features on the GPU;
# 2. benchmarks/fast_step.py: the exact float32 step (host) against the fast paths (device data, graph-captured, compiled
#    and graph-captured), milliseconds and kernels per iteration;
# 3. the first number at the paper's budget: one Fashion-MNIST seed of the paper's MNIST setting, 300 epochs,
#    --cuda-graph --compile, for whatever the budget leaves (it evaluates and checkpoints every 10 epochs; the
#    learning rate is constant in this setting, so the epochs reached are exactly the start of the full run, and
#    `--resume` on the next lease continues it).
#
# Results land in $OUT: device.txt, cuda_tests.log, fast_step.{json,md}, fashion_seed1.tar.gz (the run's log,
# record, TensorBoard events and summary if it finished; no checkpoints) and session.log. Copy the numbers into
# docs/RESULTS.md with the device named.
OUT=${OUT:-gpu-check}
DATA=${DATA:-data}
BUDGET_S=${BUDGET_S:-560}
. "$(dirname "$0")/_gpu_common.sh"
cuda_tests 120

echo "== the exact step against the fast paths ($(left) s left)"
timeout 100 python benchmarks/fast_step.py --device cuda --data-dir "$DATA" --iterations 100 --rounds 3 \
  --variants host,bare,device,graph,graph+compile --output "$OUT/fast_step.json"

echo "== Fashion-MNIST seed 1, 300 epochs, --cuda-graph --compile ($(left) s left)"
run=fashion_seed1; rm -rf "$run"
remaining=$(( $(left) - 15 ))
timeout --signal=INT $(( remaining > 30 ? remaining : 30 )) python recipes/fashion_mnist_ssl.py --seed 1 \
  --cuda-graph --compile --device cuda --data-dir "$DATA" --epochs 300 --eval-every 10 --image-every 1000000 \
  --output-dir "$run" > "$OUT/fashion_seed1.log" 2>&1
tail -n 12 "$OUT/fashion_seed1.log"
tar czf "$OUT/fashion_seed1.tar.gz" --exclude=checkpoints "$run" "$OUT/fashion_seed1.log"
echo "== done in $(( $(date +%s) - START )) s"
