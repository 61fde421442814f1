"""``nasseg bench``: supernet step time and peak memory against the papers' straightforward code
and the original codes, and the other ratios of the performance targets.

nets (the measured networks) -> measure (time, memory, what a run's suites share) -> one module per
suite (supernets, hessian, ray_trials, peers, plan) -> run (the suites of one run) -> output (table,
CSV, JSON, plot)."""
