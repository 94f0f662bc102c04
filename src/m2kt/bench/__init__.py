"""Side-by-side runs of methods and baselines; results JSON, tables and plots."""
