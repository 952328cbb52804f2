"""Speed and memory measurements of robustkit (ratios within one run; never run as tests)."""
