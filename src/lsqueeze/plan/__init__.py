"""From a preset to the plan: validation, canonical ids, the jobs the DAG needs and where
their files live. No torch."""
