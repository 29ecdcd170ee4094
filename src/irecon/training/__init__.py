"""Training: ``options`` (what a run takes), ``plan`` (every pre-run check), ``checkpoints`` (the
checkpoint dict and its resume rules), ``runtime`` (process group, signals, rank reductions),
``optim`` (Adam, sharded or not, and its bytes per rank), ``feeding`` (the training loader),
``report`` (outcome, result and printed lines) and ``loop`` (the loop)."""
