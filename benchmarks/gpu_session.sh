#!/usr/bin/env bash
# Everything this project measures on a GPU (the fast step, multi-seed runs and the paper's 10-seed table), in one
# command that fits a short lease of one GPU machine:
#
#   OUT=gpu-results DATA=/path/with/FashionMNIST BUDGET_S=540 bash benchmarks/gpu_session.sh
#
# 1. the CUDA tests (graph-captured step against eager, capturable ReferenceAdam, device-resident data, the older
#    GPU paths);
# 2. benchmarks/fast_step.py: the MNIST-setting step (goal 1) from the host loader to the graph-captured step,
#    with kernels per iteration;
# 3. benchmarks/gpu_paper_step.py: the paper's CIFAR-10 semi-supervised step (goal 3) in float32, graph-captured,
#    and graph-captured with TF32 or bf16;
# 4. the Fashion-MNIST recipe (the paper's MNIST setting) on 10 seeds in one command (--seeds 1-10 --cuda-graph),
#    300 epochs asked, for whatever the budget leaves: each seed evaluates and checkpoints every epoch, so the
#    curves of the epochs reached come back (the learning rate is constant in this setting: the first E epochs of a
#    300-epoch run are exactly an E-epoch run). A resume on another lease continues it.
#
# Results land in $OUT (at most 8 files): device.txt, cuda_tests.log, fast_step.{json,md},
# gpu_paper_step.{json,md}, fashion_seeds.tar.gz (each seed's log, run record, TensorBoard events and summary if it
# finished; no checkpoints) and session.log.
OUT=${OUT:-gpu-results}
DATA=${DATA:-data}
BUDGET_S=${BUDGET_S:-540}
. "$(dirname "$0")/_gpu_common.sh"
cuda_tests 110

echo "== MNIST-setting step ($(left) s left)"
timeout 130 python benchmarks/fast_step.py --device cuda --data-dir "$DATA" --iterations 100 --rounds 3 \
  --variants host,device,graph,bare,graph+compile --output "$OUT/fast_step.json"

echo "== CIFAR-10 semi-supervised step ($(left) s left)"
timeout 100 python benchmarks/gpu_paper_step.py --steps semi-supervised --modes fp32,graph,graph+tf32,graph+bf16 \
  --iterations 50 --warmup 5 --is-samples 0 --output "$OUT/gpu_paper_step.json" 2>&1 | tail -12

echo "== Fashion-MNIST, 10 seeds ($(left) s left)"
runs=fm_seeds; rm -rf "$runs"
remaining=$(( $(left) - 20 ))
timeout --signal=INT $(( remaining > 30 ? remaining : 30 )) python recipes/fashion_mnist_ssl.py --seeds 1-10 \
  --cuda-graph --device cuda --data-dir "$DATA" --epochs 300 --image-every 1000000 --output-dir "$runs"
sleep 3
tail -n 3 "$runs"/seed*.log
tar czf "$OUT/fashion_seeds.tar.gz" --exclude=checkpoints "$runs"
echo "== done in $(( $(date +%s) - START )) s"
