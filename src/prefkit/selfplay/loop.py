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
from prefkit.io import atomic_write, read_json, write_json
from prefkit.modeling.generation import Sample, encode_prompt, generate
from prefkit.modeling.load import load_tokenizer, sharded
from prefkit.modeling.vllm_generator import make_generator, request_seeds
from prefkit.train.precompute import score_examples
from prefkit.train.checkpoint import all_finite
from prefkit.train.rundir import open_run
from prefkit.selfplay.anchors import load_policy, make_anchors, policy_path, save_policy, using
from prefkit.selfplay.config import SELFPLAY_FEEDS, SelfPlayConfig
from prefkit.selfplay.disk import prune_policies
from prefkit.selfplay import distributed
from prefkit.train.signals import StopRequests
from prefkit.selfplay.steps import (LABELS, EngineParts, build_examples, fit_iteration, fit_metrics,
                                   iteration_metrics, scored_anchors)
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
    anchors: object  # π_0 and the magnet: frozen copies, or with LoRA adapter states (prefkit.selfplay.anchors)
    task: object
    train_prompts: list
    eval_prompts: list
    per_response: bool  # the loss trains on single responses with win rates (SPPO, ...) rather than pairs
    labelled: bool  # the loss reads which answer of a pair won (prefkit.selfplay.steps.LABELS)
    scored: tuple  # the anchors whose log-prob tables the loss reads: "prev" (π_t), "ref" (the magnet)
    tracker: Tracker
    baseline: list  # π_0's answers to the eval prompts
    winrates: str  # "exact", "sampled" or "weighted" (prefkit.selfplay.winrates.resolve)
    pairs: str
    source: object  # the judge's enumerating side, or None for a black box
    engine_parts: EngineParts  # what every fit trains with (prefkit.selfplay.steps)
    generator: object = None  # the vLLM engine that samples (generator: vllm); None: transformers' generate


def selfplay(config: SelfPlayConfig) -> Path:
    """Run `config.iterations` self-play iterations; returns the directory of the final policy."""
    from prefkit.judges import load_judge

    trackers = external_trackers(config.report_to)  # a tracker that is not installed is named now
    main = distributed.is_main()  # the main process writes every file; the others wait for it where they must
    out = open_run(config, "selfplay", main)  # before anything loads: an earlier run is never clobbered
    judge = load_judge(config.judge)  # a bad judge spec fails before any model loads
    mode, pairs, source = winrates.resolve(config, judge)
    _warn_early_refresh(config)
    task, train_prompts, eval_prompts = _prompts(config)  # and so does a bad prompts file
    state = _read_state(out) if config.resume else {"completed": 0, "magnet": 0}
    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    parts, model = _engine_parts(load_policy(out, state["completed"], config), config, trackers, out,
                                 state["completed"])
    accelerator = parts.accelerator
    distributed.check_processes(accelerator)
    anchors = make_anchors(model, out, state, config)
    eval_prompts = eval_prompts[:config.eval_limit]
    baseline = _eval_samples(out, 0, model, tokenizer, eval_prompts, config) if main else []  # π_0's, once
    objective = losses.Objective(config.loss, None, config.loss_params)
    kind = objective.kind_for(SELFPLAY_FEEDS)
    tracker = Tracker(accelerator, out, asdict(config), enabled=main, trackers=trackers, project=config.project,
                      run_name=config.run_name)
    run = Run(config, out, state, judge, tokenizer, model, anchors, task, train_prompts, eval_prompts,
              kind == "selfplay-singles", objective.reads(*LABELS), scored_anchors(objective), tracker, baseline,
              mode, pairs, source, parts)
    run.generator = make_generator(config, accelerator.num_processes)

    console = Console(config.iterations, state["completed"], enabled=config.progress and main,
                      name=f"self-play {config.loss}",
                      unit="iteration", shown=SHOWN)
    with StopRequests() as stop:
        for t in range(state["completed"] + 1, config.iterations + 1):
            metrics = _iteration(run, t, stop)
            console.advance()
            console.metrics(t, metrics)
            if distributed.stopping(accelerator, stop.requested) and t < config.iterations:
                console.close()
                tracker.close()
                raise stop.stopped(f"iteration {t}; --resume continues with iteration {t + 1}")
    console.close()
    tracker.close()
    if main:
        write_run_report(out, "selfplay", config)
    return _save_final(run)


def _iteration(run: Run, t: int, stop: StopRequests) -> dict[str, float]:
    """Sample, judge, score, fit, refresh, measure, save; each stage's output is on disk before the next starts,
    so a stop request between stages (or during the fit, which is a pure function of those outputs) loses
    nothing."""
    config, model, magnet, tokenizer = run.config, run.model, run.anchors.magnet(), run.tokenizer
    folder = run.out / f"iter-{t:04d}"
    accelerator = run.engine_parts.accelerator

    def check(saved: str) -> None:
        if distributed.stopping(accelerator, stop.requested):
            raise stop.stopped(f"iteration {t}'s {saved}; --resume continues from them")

    prompts = _iteration_prompts(run.train_prompts, t, config.prompts_per_iteration)
    samples, opponents = _samples(folder, model, magnet, tokenizer, prompts, config, seed=config.seed * 1000 + t,
                                  engine=run.generator, policy_dir=policy_path(run.out, t - 1, config),
                                  accelerator=accelerator)
    check("samples")
    before = distributed.map_shards(accelerator, prompts, lambda part: winrates.distributions(
        model, tokenizer, run.source, part)) if run.source else None
    candidates, rates, labels, enumerated = _targets(run, folder, prompts, samples, opponents, before, check)
    examples, inputs = build_examples(prompts, candidates, rates, tokenizer, run.pairs, run.per_response,
                                      matrices=labels, enumerated=enumerated,
                                      baseline=0.5 if run.winrates == "exact" else None, labelled=run.labelled)
    tables = _score(folder, {"prev": model, "ref": magnet}, run.scored, examples, config, accelerator)
    check("samples, judgements and log-prob tables")
    fitted = fit_iteration(run.engine_parts, examples, tables, inputs, tokenizer, config, seed=t, stop=stop,
                           loss_params=config.loss_params_at(t))
    distributed.take_trained_weights(model, run.engine_parts.policy, accelerator)
    check("samples, judgements and log-prob tables")
    if not all_finite(model):
        raise RunStopped(f"iteration {t}: the weights are not finite; the policy of iteration {t - 1} is kept")
    # measured once, on the main process: every process then takes the same refresh decision
    refreshed, metrics = distributed.on_main(accelerator, lambda: _measure(run, t, prompts, before))
    if config.eta_final is not None:
        metrics["eta"] = float(config.loss_params_at(t)["eta"])
    metrics.update(fit_metrics(fitted))
    metrics.update(refreshed=float(refreshed), examples=float(len(examples)),
                   train_length=float(np.mean([len(s.ids) for g in samples for s in g])))
    if accelerator.is_main_process:
        save_policy(model, tokenizer, folder / "policy", config)
    if refreshed:
        run.anchors.refresh(model)
        if accelerator.is_main_process:
            save_policy(model, tokenizer, run.out / "magnet", config)  # for users; resume reads iter-NNNN/policy
        run.state["magnet"] = t
    run.tracker.log(t, metrics)
    run.state["completed"] = t
    if accelerator.is_main_process:
        write_json(run.out / "state.json", run.state)
        prune_policies(run.out, run.state, config.keep_policies)  # after state.json: it names what resume reads
    accelerator.wait_for_everyone()  # the iteration is on disk before any process moves on
    return metrics


def _measure(run: Run, t: int, prompts: list, before) -> tuple[bool, dict[str, float]]:
    """Whether the magnet is refreshed after iteration t, and the iteration's evaluation metrics."""
    config, model, magnet, tokenizer = run.config, run.model, run.anchors.magnet(), run.tokenizer
    refreshed = _due(config, t, run.state, model, magnet, tokenizer, run.task, run.eval_prompts)
    answers = _eval_samples(run.out, t, model, tokenizer, run.eval_prompts, config)
    previous = _eval_samples(run.out, t - 1, model, tokenizer, run.eval_prompts, config)
    anchors = {"magnet": magnet, "initial": run.anchors.initial()}
    metrics = iteration_metrics(run.judge, model, anchors, tokenizer, run.eval_prompts, answers, run.baseline,
                                previous, run.task, config, t, run.source)
    if before is not None:
        metrics.update(_tracking(run, prompts, before, config.loss_params_at(t)))
    return refreshed, metrics


def _engine_parts(model, config: SelfPlayConfig, trackers: list, out: Path, completed: int) -> tuple:
    """(`EngineParts` prepared once for every iteration's fit, the model that samples, scores, is measured and is
    saved): that model is `model` itself, which the fit trains, unless the launch shards the fit's weights (FSDP),
    leaving each process a shard: then it is `model` loaded again, whole, and each fit's weights are gathered
    into it (`distributed.take_trained_weights`)."""
    from prefkit.train.engine import PolicyLogps, make_accelerator, make_optimizer

    accelerator = make_accelerator(config.mixed_precision, trackers, str(out))
    policy = PolicyLogps(model, config.logprob_chunk_size, config.packing, config.token_metrics)
    parts = EngineParts(accelerator, *accelerator.prepare(policy, make_optimizer(policy, config, accelerator)))
    if sharded(parts.policy):
        model = load_policy(out, completed, config).to(accelerator.device)
    return parts, model


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
    from prefkit.judges import win_rates

    config, tokenizer = run.config, run.tokenizer
    if run.winrates == "exact":
        candidates, enumerated = samples, None
        if run.pairs == "canonical":
            candidates, enumerated = map(list, zip(*[winrates.canonical_candidates(d, g)
                                                     for d, g in zip(before, samples)]))
        rates = [winrates.exact_rates(run.source, p, c, d) for p, c, d in zip(prompts, candidates, before)]
        return candidates, rates, None, enumerated
    texts = [[s.text for s in group + others] for group, others in zip(samples, opponents)]
    accelerator = run.engine_parts.accelerator
    matrices = distributed.judge_matrices(accelerator, run.judge, prompts, texts, folder / "judged.npz",
                                          config.judge_chunk_size)
    check("samples and judgements")
    k = config.samples_per_prompt  # with opponents (Nash-MD), each sample's win rate is against them
    if config.mixture_coef:
        rates = matrices[:, :k, k:].mean(-1)
    elif run.winrates == "weighted":
        eos = tokenizer.eos_token_id
        groups = [(encode_prompt(tokenizer, prompt), [s.ids or [eos] for s in group])
                  for prompt, group in zip(prompts, samples)]
        logps = distributed.map_shards(accelerator, groups, lambda part: winrates.group_logps(run.model, part))
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
    with run.anchors.magnet() as anchor:
        magnet = winrates.distributions(anchor, run.tokenizer, run.source, unique)
    results = []
    for prompt, now, anchor in zip(unique, after, magnet):
        start = before[first[prompt]]
        rates = winrates.exact_rates(run.source, prompt, start.responses, start)
        results.append(winrates.tracking(start, now, anchor, rates, weights))
    distances, achieved, intended = map(np.array, zip(*results))
    # a share of a move below a thousandth of a nat per response is noise over nothing: report none
    share = achieved.sum() / intended.sum() if intended.mean() > 1e-6 else float("nan")
    return {"tracking_tv": float(distances.mean()), "tracking_share": float(share)}


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
    with magnet as magnet_model:
        anchor = canonical_distributions(magnet_model, tokenizer, task, cyclic)
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


def _samples(folder: Path, model, magnet_model, tokenizer, prompts, config, seed: int, engine=None, policy_dir=None,
             *, accelerator):
    """K samples per prompt from π_t and, with `mixture_coef` > 0, K opponents from the geometric mixture
    π_t^(1−β)·π_ref^β (Nash-MD). Saved once; a resumed iteration reuses them. With a vLLM `engine` it samples
    π_t, whose weights are saved in `policy_dir` (the opponents stay on transformers). On several processes each
    draws its share of the prompts (transformers: its blocks, prefkit.selfplay.distributed.sample) and the main
    process saves them all."""
    path = folder / "samples.json"
    if path.is_file():  # sampled before an interruption: reuse, never resample
        saved = read_json(path)
        load = lambda groups: [[Sample(s["text"], s["ids"]) for s in group] for group in groups]  # noqa: E731
        return load(saved["samples"]), load(saved["opponents"])
    options = dict(temperature=config.temperature, max_new_tokens=config.max_new_tokens)
    k = config.samples_per_prompt

    def draw(first_seed: int, **extra) -> list:  # transformers' generate, block by block over the processes
        return distributed.sample(accelerator, prompts, config.sample_block, first_seed, lambda part, block_seed:
                                  generate(model, tokenizer, part, k, seed=block_seed, **options, **extra))

    if engine is None:
        samples = draw(seed, top_p=config.top_p)
    else:  # vLLM: it holds π_t once the weights saved in `policy_dir` are pushed (prefkit.modeling.vllm_generator)
        engine.hold(model, policy_dir, main=accelerator.is_main_process)
        accelerator.wait_for_everyone()  # a server shared by the processes has the new weights before any samples
        seeded = list(zip(prompts, request_seeds(seed, len(prompts))))
        samples = distributed.map_shards(accelerator, seeded, lambda mine: engine.sample(
            tokenizer, [p for p, _ in mine], k, seeds=[s for _, s in mine], top_p=config.top_p, **options),
            group=engine.group)
    mixture = (magnet_model, config.mixture_coef)
    opponents = draw(seed + 1, mixture=mixture) if config.mixture_coef else [[] for _ in prompts]
    if accelerator.is_main_process:
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


def _score(folder, anchors: dict, scored: tuple, examples, config, accelerator) -> dict[str, torch.Tensor]:
    """Log-probs of the training examples under the `scored` anchors of `anchors` (π_t, the model before this
    iteration's fit, as "prev"; the magnet as "ref"), each process scoring its share; the main process saves the
    tables."""
    from safetensors.torch import load_file, save_file

    path = folder / "logps.safetensors"  # safetensors: a table from disk can never run code
    if path.is_file():
        try:
            return {name: table for name, table in load_file(str(path)).items() if name in scored}
        except Exception as error:  # safetensors' own error types differ between versions
            raise PrefkitError(f"{path}: not a readable safetensors file ({error}); remove it to recompute "
                               "this iteration's log-probs") from None
    options = dict(batch_size=config.batch_size, chunk_size=config.logprob_chunk_size, packing=config.packing)
    indices = list(range(len(examples)))
    tables = {}
    for name in scored:
        with using(anchors[name]) as policy:  # the magnet: a frozen copy, or with LoRA an adapter state of the model
            tables[name] = torch.tensor(distributed.map_shards(accelerator, indices, lambda mine: score_examples(
                policy, examples, mine, **options)), dtype=torch.float32)
    if accelerator.is_main_process:
        atomic_write(path, lambda tmp: save_file(tables, str(tmp)))
    return tables


def _save_final(run: Run) -> Path:
    """final/: the policy, its tokenizer and a model card (method, hyper-parameters, judge, prompts)."""
    final, accelerator = run.out / "final", run.engine_parts.accelerator
    run.anchors.close()  # training is over: final/ gets the policy alone (with LoRA, its one adapter)
    if accelerator.is_main_process:
        records = read_metrics(run.out)
        metrics = {k: v for k, v in (records[-1] if records else {}).items() if k != "step"}
        save_final(run.model, run.tokenizer, final, run.config, None, metrics)
    accelerator.wait_for_everyone()
    return final


def _read_state(out: Path) -> dict:
    path = out / "state.json"
    return read_json(path) if path.is_file() else {"completed": 0, "magnet": 0}

