"""prefkit's head statistics against TRL's own fused head (trl.kernels.chunked_logprob, the code behind TRL 1.16's
`entropy`, `logits/*` and `mean_token_accuracy`), on the same random hidden states and head weights: per-position
entropy, mean logit and argmax hit, with and without a logit scale and soft cap, in float32. TRL must be
importable (`pip install trl`, or `--trl-path` to its source's parent directory).

    python bench/token_metrics_vs_trl.py --trl-path /work/trl-pkgs
"""

from __future__ import annotations

import argparse
import sys

import torch


def compare(positions: int, hidden_size: int, vocab: int, scale: float, softcap: float | None, seed: int) -> dict:
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    from prefkit.modeling.head import head_logps

    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(positions, hidden_size, generator=g)
    weight = torch.randn(vocab, hidden_size, generator=g) / hidden_size ** 0.5
    targets = torch.randint(0, vocab, (positions,), generator=g)
    z = torch.nn.functional.linear(hidden, weight) * scale
    targets[::3] = z[::3].argmax(-1)  # every third target is the argmax, so hits are not all zero
    with torch.no_grad():
        theirs = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 4096, softcap, scale,
                                              ("entropy", "mean_logits", "is_top1"))
        ours, stats = head_logps(hidden, weight, None, targets, scale=scale, softcap=softcap, rows=256,
                                 columns=4096, statistics=True)
    logps, entropy, _, mean_logits, is_top1 = theirs
    return {"log-prob": (ours - logps).abs().max().item(), "entropy": (stats.entropy - entropy).abs().max().item(),
            "mean logit": (stats.logit_sum / vocab - mean_logits).abs().max().item(),
            "argmax hits differing": int((stats.top1 != is_top1).sum()), "hits": int(is_top1.sum())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trl-path", help="a directory holding TRL's `trl` package, if it is not installed")
    args = parser.parse_args()
    if args.trl_path:
        sys.path.insert(0, args.trl_path)
    import trl

    print(f"trl {trl.__version__} from {trl.__file__}; torch {torch.__version__}")
    for scale, softcap in ((1.0, None), (0.25, None), (1.0, 30.0)):
        result = compare(600, 256, 50_000, scale, softcap, seed=0)
        print(f"scale {scale}, softcap {softcap}: max |prefkit - TRL| " + ", ".join(
            f"{k} {v:.2e}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
