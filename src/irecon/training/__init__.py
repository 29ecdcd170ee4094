"""Training: ``options`` (what a run takes), ``plan`` (every pre-run check), ``checkpoints`` (the
checkpoint dict and its resume rules), ``runtime`` (process group, signals, rank reductions) and
``loop`` (the loop and its outcome)."""
