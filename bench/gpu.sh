#!/usr/bin/env bash
# Issue #15's GPU benchmarks in one command, sized for under 10 minutes on one GPU: prefkit against TRL's
# DPOTrainer (and TRL with Liger's kernels when liger-kernel is installed) at the small, 128k- and 256k-vocabulary
# shapes, bf16 on every peer; the memory account at 128k; long completions of 2k and 8k tokens. Each benchmark
# chooses the GPU itself (see their docstrings); the outputs go to OUT (default: bench-gpu/ beside bench/).
#
#   PYTHONPATH=$PWD/src bash bench/gpu.sh [OUT]      # a CUDA build of torch, and trl importable
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mkdir -p "${1:-$here/../bench-gpu}" && cd "${1:-$here/../bench-gpu}" && pwd)
cd "$here"
python -c "import torch, trl; assert torch.cuda.is_available(), 'no CUDA device visible to torch'"
peers=prefkit,trl
if python -c "import liger_kernel" 2>/dev/null; then peers=$peers,trl-liger; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/machine.txt"
python bench_dpo_vs_trl.py --sizes small,v128k,v256k --steps 10 --rows 80 --repeats 1 --peers "$peers" \
    | tee "$out/dpo_vs_trl.txt"
python memory_account.py --size v128k --mixed-precision bf16 | tee "$out/memory_v128k.txt"
python long_sequences.py --words 2000,8000 | tee "$out/long_sequences.txt"
