"""Job files -> Ray Tune: searches as trials (seeds in parallel, checkpointed, restartable),
Optuna HPO with ASHA, and results tables. The search engine itself (nasseg.search) runs without Ray."""
