"""The nightly batch job: chunk plan, exactly-once commit, engines (local, Ray), report and drift."""
