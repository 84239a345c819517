#!/usr/bin/env bash
# Run 108b: tools/bench.py on run 108's build (same machine, right after it): the standard layer
# over the batch sweep against PyTorch's options, torch.compile at B = 1024.
PYTHONUNBUFFERED=1 timeout 500 python3 tools/bench.py --exe build/fused3d --runs 30 --out $OUT/bench 2>&1 |
  grep -v Warning > $OUT/bench_py.log
tail -25 $OUT/bench_py.log
