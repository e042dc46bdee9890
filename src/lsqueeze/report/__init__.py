"""Tables, claims, masking checks, figures and metrics from the jobs' files. No torch."""
