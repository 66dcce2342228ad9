"""The self-play loop: one loop for MPO, INPO, COMAL, SPPO, Nash-MD and online IPO.

Iteration t: sample K responses per prompt from π_t -> judge them into a K x K preference matrix per prompt ->
build training examples (pairs, or single responses with win rates) -> score them once under π_t and the
reference / magnet π_ref -> fit the method's loss for E epochs -> π_{t+1} is the result; every M iterations
(MPO, COMAL) the magnet becomes the policy. Methods differ only by the loss and the refresh period.

Everything an iteration produces is persisted under `iter-NNNN/` (samples, judged matrices, pairs, log-prob
tables, the policy), so an interrupted run resumes without sampling or judging again.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from prefkit import losses
from prefkit.errors import PrefkitError, RunStopped
from prefkit.eval.curves import write_run_report
from prefkit.io import atomic_write, read_json, save_model, write_json
from prefkit.modeling.generation import Sample, encode_prompt, generate
from prefkit.modeling.load import load_model, load_tokenizer
from prefkit.modeling.reference import FrozenCopy
from prefkit.modeling.vllm_generator import make_generator
from prefkit.train.precompute import score_examples
from prefkit.train.checkpoint import all_finite
from prefkit.train.rundir import open_run
from prefkit.selfplay.config import SELFPLAY_FEEDS, SelfPlayConfig
from prefkit.selfplay.disk import prune_policies
from prefkit.train.signals import StopRequests
from prefkit.selfplay.steps import build_examples, fit_iteration, fit_metrics, iteration_metrics
from prefkit.selfplay import winrates
from prefkit.train.console import Console
from prefkit.train.model_card import save_final
from prefkit.train.tracking import Tracker, external_trackers, read_metrics

# the metric line of each iteration (prefkit.train.console); every metric goes to metrics.jsonl and the trackers
SHOWN = {"loss": "loss", "winrate_vs_initial": "win vs π0", "winrate_vs_previous": "win vs previous",
         "duality_gap": "gap", "kl_to_magnet": "KL to magnet", "entropy": "entropy", "length": "length",
         "refreshed": "refreshed"}


@dataclass
class Run:
    """What every iteration reads: the settings, the models, the judge and the prompts."""

    config: SelfPlayConfig
    out: Path
    state: dict  # {"completed": iterations done, "magnet": the iteration whose policy is the magnet (0: π_0)}
    judge: object
    tokenizer: object
    model: object
    magnet: FrozenCopy
    task: object
    train_prompts: list
    eval_prompts: list
    per_response: bool  # the loss trains on single responses with win rates (SPPO, ...) rather than pairs
    tracker: Tracker
    baseline: list  # π_0's answers to the eval prompts
    winrates: str  # "exact", "sampled" or "weighted" (prefkit.selfplay.winrates.resolve)
    pairs: str
    source: object  # the judge's enumerating side, or None for a black box
    initial: FrozenCopy | None  # π_0, kept for KL metrics when the magnet moves away from it
    engine_parts: tuple  # (accelerator, the policy prepared for the training engine)
    generator: object = None  # the vLLM engine that samples (generator: vllm); None: transformers' generate


def selfplay(config: SelfPlayConfig) -> Path:
    """Run `config.iterations` self-play iterations; returns the directory of the final policy."""
    from prefkit.judges import load_judge

    trackers = external_trackers(config.report_to)  # a tracker that is not installed is named now
    out = open_run(config, "selfplay")  # before anything loads: an earlier run is never clobbered
    judge = load_judge(config.judge)  # a bad judge spec fails before any model loads
    mode, pairs, source = winrates.resolve(config, judge)
    _warn_early_refresh(config)
    task, train_prompts, eval_prompts = _prompts(config)  # and so does a bad prompts file
    state = _read_state(out) if config.resume else {"completed": 0, "magnet": 0}
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    model = _load_policy(out, state["completed"], config)
    # the magnet is the policy of the iteration that last refreshed it, and the initial model until then
    magnet = FrozenCopy(_load_policy(out, state["magnet"], config) if state["magnet"] != state["completed"]
                        else model, config.logprob_chunk_size, config.packing)
    eval_prompts = eval_prompts[:config.eval_limit]
    baseline = _eval_samples(out, 0, model, tokenizer, eval_prompts, config)  # π_0's answers, once
    moving = bool(config.refresh_every or config.refresh_gap)
    initial = None  # π_0 for the KL metrics, kept only when the magnet moves away from it
    if moving:
        first = model if state["completed"] == 0 else _load_policy(out, 0, config)
        initial = FrozenCopy(first, config.logprob_chunk_size, config.packing)
    kind = losses.Objective(config.loss, None, config.loss_params).kind_for(SELFPLAY_FEEDS)
    accelerator, policy = _engine_parts(model, config, trackers, out)
    tracker = Tracker(accelerator, out, asdict(config), enabled=True, trackers=trackers, project=config.project,
                      run_name=config.run_name)
    run = Run(config, out, state, judge, tokenizer, model, magnet, task, train_prompts, eval_prompts,
              kind == "selfplay-singles", tracker, baseline, mode, pairs, source, initial, (accelerator, policy))
    run.generator = make_generator(config)

    console = Console(config.iterations, state["completed"], enabled=config.progress, name=f"self-play {config.loss}",
                      unit="iteration", shown=SHOWN)
    with StopRequests() as stop:
        for t in range(state["completed"] + 1, config.iterations + 1):
            metrics = _iteration(run, t, stop)
            console.advance()
            console.metrics(t, metrics)
            if stop.requested and t < config.iterations:
                console.close()
                tracker.close()
                raise stop.stopped(f"iteration {t}; --resume continues with iteration {t + 1}")
    console.close()
    tracker.close()
    write_run_report(out, "selfplay", config)
    return _save_final(run)


def _iteration(run: Run, t: int, stop: StopRequests) -> dict[str, float]:
    """Sample, judge, score, fit, refresh, measure, save; each stage's output is on disk before the next starts,
    so a stop request between stages (or during the fit, which is a pure function of those outputs) loses
    nothing."""
    config, model, magnet, tokenizer = run.config, run.model, run.magnet, run.tokenizer
    folder = run.out / f"iter-{t:04d}"

    def check(saved: str) -> None:
        if stop.requested:
            raise stop.stopped(f"iteration {t}'s {saved}; --resume continues from them")

    prompts = _iteration_prompts(run.train_prompts, t, config.prompts_per_iteration)
    samples, opponents = _samples(folder, model, magnet.model, tokenizer, prompts, config, seed=config.seed * 1000 + t,
                                  engine=run.generator, policy_dir=_policy_path(run.out, t - 1, config))
    check("samples")
    before = winrates.distributions(model, tokenizer, run.source, prompts) if run.source else None
    candidates, rates, labels, enumerated = _targets(run, folder, prompts, samples, opponents, before, check)
    examples, inputs = build_examples(prompts, candidates, rates, tokenizer, run.pairs, run.per_response,
                                      matrices=labels, enumerated=enumerated,
                                      baseline=0.5 if run.winrates == "exact" else None)
    tables = _score(folder, model, magnet.model, examples, tokenizer, config, run.per_response)
    check("samples, judgements and log-prob tables")
    fitted = fit_iteration(run.engine_parts, examples, tables, inputs, tokenizer, config, not run.per_response,
                           seed=t, stop=stop, loss_params=config.loss_params_at(t))
    check("samples, judgements and log-prob tables")
    if not all_finite(model):
        raise RunStopped(f"iteration {t}: the weights are not finite; the policy of iteration {t - 1} is kept")
    refreshed = _due(config, t, run.state, model, magnet, tokenizer, run.task, run.eval_prompts)
    answers = _eval_samples(run.out, t, model, tokenizer, run.eval_prompts, config)
    previous = _eval_samples(run.out, t - 1, model, tokenizer, run.eval_prompts, config)
    anchors = {"magnet": magnet.model, "initial": (run.initial or magnet).model}
    metrics = iteration_metrics(run.judge, model, anchors, tokenizer, run.eval_prompts, answers, run.baseline,
                                previous, run.task, config, t, run.source)
    if before is not None:
        metrics.update(_tracking(run, prompts, before, config.loss_params_at(t)))
    if config.eta_final is not None:
        metrics["eta"] = float(config.loss_params_at(t)["eta"])
    metrics.update(fit_metrics(fitted))
    metrics.update(refreshed=float(refreshed), examples=float(len(examples)),
                   train_length=float(np.mean([len(s.ids) for g in samples for s in g])))
    save_model(model, tokenizer, folder / "policy")
    if refreshed:
        magnet.model.load_state_dict(model.state_dict())
        save_model(magnet.model, tokenizer, run.out / "magnet")  # for users; resume reads iter-NNNN/policy
        run.state["magnet"] = t
    run.tracker.log(t, metrics)
    run.state["completed"] = t
    write_json(run.out / "state.json", run.state)
    prune_policies(run.out, run.state, config.keep_policies)  # after state.json: it names what resume reads
    return metrics


def _engine_parts(model, config: SelfPlayConfig, trackers: list, out: Path) -> tuple:
    """The accelerator and the policy prepared once for every iteration's fit (prefkit.train.engine)."""
    from prefkit.train.engine import PolicyLogps, make_accelerator

    accelerator = make_accelerator(config.mixed_precision, trackers, str(out))
    policy = PolicyLogps(model, config.logprob_chunk_size, config.packing, config.token_metrics)
    return accelerator, accelerator.prepare(policy)


def _warn_early_refresh(config: SelfPlayConfig) -> None:
    """Warn when the magnet moves before the regularised game it anchors has been (nearly) solved: each
    iteration contracts the distance to that game's equilibrium by w_prev = 1/(1+ηα) (MMD; 1−ητ for INPO),
    so M iterations solve M·ln(1/w_prev) e-folds of it, and well under ~2 the refreshed dynamic behaves like a
    large multiplicative-weights step, which cycles (docs/selfplay.md, "Settings that converge")."""
    import math

    from prefkit.games.planner import EARLY_REFRESH

    weights = losses.get(config.loss).step_weights(config.loss_params)
    if not config.refresh_every or weights is None or not 0 < weights[0] < 1:
        return
    progress = config.refresh_every * -math.log(weights[0])
    if progress < EARLY_REFRESH:
        print(f"prefkit: warning: refresh_every={config.refresh_every} with these step sizes solves "
              f"{progress:.2f} e-folds of each regularised game before the magnet moves (want >= ~2); the last "
              "iterate may cycle. `prefkit game plan --task-model MODEL` suggests settings that converge",
              file=sys.stderr)


def _targets(run: Run, folder: Path, prompts: list, samples: list, opponents: list, before, check):
    """What each prompt trains on: (candidates, their win rates against π_t, the judge's soft labels for
    `pairs: all` with sampled win rates or None, how many candidates are enumerated responses or None).
    Exact win rates come from π_t's own distribution `before` (nothing is judged); the others from the judged
    K x K matrices, saved as they are judged (prefkit.selfplay.winrates)."""
    from prefkit.judges import preference_matrix, win_rates

    config, tokenizer = run.config, run.tokenizer
    if run.winrates == "exact":
        candidates, enumerated = samples, None
        if run.pairs == "canonical":
            candidates, enumerated = map(list, zip(*[winrates.canonical_candidates(d, g)
                                                     for d, g in zip(before, samples)]))
        rates = [winrates.exact_rates(run.source, p, c, d) for p, c, d in zip(prompts, candidates, before)]
        return candidates, rates, None, enumerated
    texts = [[s.text for s in group + others] for group, others in zip(samples, opponents)]
    matrices = preference_matrix(run.judge, prompts, texts, checkpoint=folder / "judged.npz",
                                 chunk_size=config.judge_chunk_size)
    check("samples and judgements")
    k = config.samples_per_prompt  # with opponents (Nash-MD), each sample's win rate is against them
    if config.mixture_coef:
        rates = matrices[:, :k, k:].mean(-1)
    elif run.winrates == "weighted":
        eos = tokenizer.eos_token_id
        logps = winrates.group_logps(run.model, [(encode_prompt(tokenizer, prompt), [s.ids or [eos] for s in group])
                                                 for prompt, group in zip(prompts, samples)])
        rates = winrates.weighted_rates(matrices, samples, logps, eos)
    else:
        rates = win_rates(matrices)
    # sampled: the judge's soft labels for `pairs: all`; weighted: the pairs carry the weighted win rates
    labels = matrices[:, :k, :k] if run.winrates == "sampled" else None
    return samples, list(rates), labels, None


def _tracking(run: Run, prompts: list, before: list, loss_params: dict) -> dict[str, float]:
    """Mean total-variation distance between π_{t+1} and the exact step it was fitting, and the share of the
    intended log-prob move achieved, over the iteration's prompts (prefkit.selfplay.winrates.tracking)."""
    weights = losses.get(run.config.loss).step_weights(loss_params)
    if weights is None:  # the loss fits no exact tabular step (online IPO, Nash-MD)
        return {}
    first = {p: i for i, p in reversed(list(enumerate(prompts)))}  # each prompt once
    unique = list(first)
    after = winrates.distributions(run.model, run.tokenizer, run.source, unique)
    magnet = winrates.distributions(run.magnet.model, run.tokenizer, run.source, unique)
    results = []
    for prompt, now, anchor in zip(unique, after, magnet):
        start = before[first[prompt]]
        rates = winrates.exact_rates(run.source, prompt, start.responses, start)
        results.append(winrates.tracking(start, now, anchor, rates, weights))
    distances, achieved, intended = map(np.array, zip(*results))
    # a share of a move below a thousandth of a nat per response is noise over nothing: report none
    share = achieved.sum() / intended.sum() if intended.mean() > 1e-6 else float("nan")
    return {"tracking_tv": float(distances.mean()), "tracking_share": float(share)}


def _policy_path(out: Path, iteration: int, config: SelfPlayConfig) -> str:
    """Where π_iteration is saved: the initial model for 0, else the policy saved after that iteration."""
    return str(out / f"iter-{iteration:04d}" / "policy") if iteration else config.model


def _load_policy(out: Path, iteration: int, config: SelfPlayConfig):
    """π_iteration, loaded from `_policy_path`."""
    return load_model(_policy_path(out, iteration, config), dtype=config.dtype,
                      trust_remote_code=config.trust_remote_code, fuse=config.fuse_modules)


def _due(config, t, state, model, magnet, tokenizer, task, eval_prompts) -> bool:
    """Refresh the magnet every `refresh_every` iterations, or (adaptive) once the regularised gap, measured
    exactly on the task's canonical sets, falls below `refresh_gap`."""
    if config.refresh_every and t % config.refresh_every == 0:
        return True
    if config.refresh_gap is None or task is None:
        return False
    from prefkit.games import regularised_gap
    from prefkit.tasks import canonical_distributions

    cyclic = [p for p in eval_prompts if task.kind(p) == "cyclic"]
    alpha = losses.get(config.loss).check_hyperparameters(config.loss_params).get("alpha", 0.0)
    policy = canonical_distributions(model, tokenizer, task, cyclic)
    anchor = canonical_distributions(magnet.model, tokenizer, task, cyclic)
    gaps = [regularised_gap(task.preference_matrix(p), pi, alpha, mu) for p, (pi, _), (mu, _) in
            zip(cyclic, policy, anchor)]
    return bool(np.mean(gaps) < config.refresh_gap)


def _prompts(config: SelfPlayConfig):
    """(task or None, training prompts, eval prompts). `task` trains on all of the bundled task's prompts,
    `task:cyclic` / `task:transitive` on one family, `task:balanced` alternates the two families."""
    if config.prompts.split(":")[0] == "task":
        from prefkit.tasks import SyntheticTask

        task, which = SyntheticTask(), config.prompts.partition(":")[2] or "all"
        families = {kind: task.prompts(kind, split="train") for kind in ("cyclic", "transitive")}
        choices = {"all": task.prompts(split="train"), "cyclic": families["cyclic"],
                   "transitive": families["transitive"], "balanced": _alternate(*families.values())}
        if which not in choices:
            raise PrefkitError(f"config: prompts {config.prompts!r}: use task, task:cyclic, task:transitive or "
                               "task:balanced, or a file")
        evaluation = _alternate(task.prompts("cyclic", split="eval"), task.prompts("transitive", split="eval"))
        return task, choices[which], evaluation  # both kinds among the first eval_limit prompts
    prompts = _prompt_file(config.prompts)
    return None, prompts, _prompt_file(config.eval_prompts) if config.eval_prompts else prompts[:32]


def _prompt_file(path: str) -> list:
    """The non-empty `prompt` fields of a JSONL / JSON / CSV file; a row without one is named."""
    from prefkit.data.sources import load_rows

    prompts = []
    for row, raw in load_rows(path).rows:
        if not isinstance(raw, dict) or not raw.get("prompt"):
            raise PrefkitError(f"{path}: row {row}: field 'prompt' is missing or empty")
        prompts.append(raw["prompt"])
    if not prompts:
        raise PrefkitError(f"{path}: no rows with a non-empty 'prompt' field")
    return prompts


def _alternate(first: list, second: list) -> list:
    """first[0], second[0], first[1], ...; the shorter list cycles, so both families appear equally often."""
    longest = max(len(first), len(second))
    return [p for i in range(longest) for p in (first[i % len(first)], second[i % len(second)])]


def _iteration_prompts(prompts: list, t: int, count: int) -> list:
    """Walk through the prompts in a fixed shuffled order, `count` per iteration, wrapping around."""
    order = np.random.default_rng(0).permutation(len(prompts))
    start = (t - 1) * count
    return [prompts[order[(start + i) % len(prompts)]] for i in range(count)]


def _samples(folder: Path, model, magnet_model, tokenizer, prompts, config, seed: int, engine=None, policy_dir=None):
    """K samples per prompt from π_t and, with `mixture_coef` > 0, K opponents from the geometric mixture
    π_t^(1−β)·π_ref^β (Nash-MD). Saved once; a resumed iteration reuses them. With a vLLM `engine` it samples
    π_t, whose weights are saved in `policy_dir` (the opponents stay on transformers)."""
    path = folder / "samples.json"
    if path.is_file():  # sampled before an interruption: reuse, never resample
        saved = read_json(path)
        load = lambda groups: [[Sample(s["text"], s["ids"]) for s in group] for group in groups]  # noqa: E731
        return load(saved["samples"]), load(saved["opponents"])
    options = dict(seed=seed, temperature=config.temperature, max_new_tokens=config.max_new_tokens)
    k = config.samples_per_prompt
    if engine is None:
        samples = generate(model, tokenizer, prompts, k, top_p=config.top_p, **options)
    else:  # vLLM: it holds π_t once the weights saved in `policy_dir` are pushed (prefkit.modeling.vllm_generator)
        samples = engine.sample(model, policy_dir, tokenizer, prompts, k, top_p=config.top_p, **options)
    mixture = (magnet_model, config.mixture_coef)
    opponents = generate(model, tokenizer, prompts, config.samples_per_prompt, mixture=mixture,
                         **{**options, "seed": seed + 1}) if config.mixture_coef else [[] for _ in prompts]
    write_json(path, {"prompts": prompts, "samples": [[vars(s) for s in g] for g in samples],
                       "opponents": [[vars(s) for s in g] for g in opponents]})
    return samples, opponents


def _eval_samples(out: Path, t: int, model, tokenizer, prompts, config) -> list[Sample]:
    """One answer per eval prompt (times eval_samples) from π_t, saved so later iterations compare against it."""
    path = out / f"eval-{t:04d}.json"
    if path.is_file():
        return [Sample(s["text"], s["ids"]) for s in read_json(path)]
    groups = generate(model, tokenizer, prompts, config.eval_samples, seed=10_000 + config.seed,
                      temperature=config.temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens)
    answers = [s for g in groups for s in g]
    write_json(path, [vars(s) for s in answers])
    return answers


def _score(folder, model, magnet_model, examples, tokenizer, config, per_response) -> dict[str, torch.Tensor]:
    """Log-probs of the training examples under π_t (the model before this iteration's fit) and π_ref."""
    from safetensors.torch import load_file, save_file

    path = folder / "logps.safetensors"  # safetensors: a table from disk can never run code
    if path.is_file():
        try:
            return load_file(str(path))
        except Exception as error:  # safetensors' own error types differ between versions
            raise PrefkitError(f"{path}: not a readable safetensors file ({error}); remove it to recompute "
                               "this iteration's log-probs") from None
    options = dict(batch_size=config.batch_size, chunk_size=config.logprob_chunk_size,
                   packing=config.packing, device=model.device)
    indices = range(len(examples))
    tables = {name: torch.tensor(score_examples(m, examples, indices, tokenizer.pad_token_id, not per_response,
                                                **options), dtype=torch.float32)
              for name, m in (("prev", model), ("ref", magnet_model))}
    atomic_write(path, lambda tmp: save_file(tables, str(tmp)))
    return tables


def _save_final(run: Run) -> Path:
    """final/: the policy, its tokenizer and a model card (method, hyper-parameters, judge, prompts)."""
    records = read_metrics(run.out)
    metrics = {k: v for k, v in (records[-1] if records else {}).items() if k != "step"}
    final = run.out / "final"
    save_final(run.model, run.tokenizer, final, run.config, None, metrics)
    return final


def _read_state(out: Path) -> dict:
    path = out / "state.json"
    return read_json(path) if path.is_file() else {"completed": 0, "magnet": 0}

