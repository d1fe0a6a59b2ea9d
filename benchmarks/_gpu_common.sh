# Sourced by gpu_check.sh and gpu_session.sh (set OUT, DATA, BUDGET_S defaults before sourcing): the time budget,
# the session log, the device record and the CUDA tests that both scripts start with.
set -u
START=$(date +%s)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
exec > >(tee -a "$OUT/session.log") 2>&1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1
python -c "import torch, ignite; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'ignite', ignite.__version__)" >> "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"

# The CUDA tests: the graph-captured step against eager, the capturable ReferenceAdam, the device-resident data.
cuda_tests() {  # $1: time limit in seconds
  echo "== CUDA tests ($(left) s left)"
  timeout "$1" python -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_fused_step.py \
    tests/test_optim_capturable.py tests/test_device_data.py > "$OUT/cuda_tests.log" 2>&1
  tail -15 "$OUT/cuda_tests.log"
}
