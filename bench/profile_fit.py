"""Where one `prefkit train` run's wall time goes, stage by stage: cProfile's cumulative times of prefkit's own
functions (setup, reference precompute, the steps' forward and backward, the final model and run report), on a
shape of bench_dpo_vs_trl.py with the same settings as its prefkit child.

    python bench/profile_fit.py --size small --steps 10 --rows 80
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rows", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mixed-precision", dest="mixed_precision", default="no")
    parser.add_argument("--lines", type=int, default=40, help="functions shown, by cumulative time")
    args = parser.parse_args()

    import torch

    import accelerate  # noqa: F401  imported before the clock starts, as in bench_dpo_vs_trl.py
    from bench_dpo_vs_trl import MAX_LENGTH, build
    from prefkit.train.config import load_config
    from prefkit.train.offline import fit

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp())
    model_dir, data = build(work, args.size, args.rows)
    out = str(work / "run")
    config = load_config(None, dict(model=str(model_dir), data=str(data), output_dir=out, loss="dpo",
                                    max_steps=args.steps, batch_size=8, learning_rate=1e-5, reference="precomputed",
                                    cache_dir=out + "/cache", progress=False, logging_steps=args.steps,
                                    max_length=MAX_LENGTH, mixed_precision=args.mixed_precision))
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.runcall(fit, config)
    print(f"fit: {time.perf_counter() - start:.2f} s ({args.size}, {args.steps} steps, {args.threads} threads)")
    pstats.Stats(profile).sort_stats("cumulative").print_stats(r"prefkit/", args.lines)


if __name__ == "__main__":
    main()
