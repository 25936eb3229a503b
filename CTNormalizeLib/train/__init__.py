"""Training of the learned models: simulated or manifest pairs, checkpoints, packages."""
