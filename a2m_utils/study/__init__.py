"""The study: the paper's tables as notebooks over (pipeline, prompt set, real set, validation set,
preset). Presets, experiments, the paper's numbers, the profile runner and the report."""
