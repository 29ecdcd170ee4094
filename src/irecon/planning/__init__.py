"""The memory planner setting runs: shapes-only peaks, the measured margin, and the largest setting that fits."""
