"""The plumbing every layer uses: atomic files and their checks, devices and GPU pinning,
progress, strict YAML, missing values, the code fingerprints. No science here."""
