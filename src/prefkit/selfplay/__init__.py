"""Self-play training against a preference judge (`prefkit selfplay`), on the same engine as `prefkit train`.

One iteration: sample K answers per prompt -> judge them -> win rates -> examples -> score -> fit -> refresh the
magnet. `loop.selfplay` runs the iterations and resume; `steps` turns judged samples into examples and fits them;
`winrates` holds the win-rate estimators; `config` the `SelfPlayConfig`; `disk` what is kept on disk;
`distributed` shares an iteration out over several processes (`accelerate launch`).
See docs/selfplay.md.
"""
