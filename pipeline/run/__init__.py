"""Running a manifest: jobs, grouping, the style-target cache, memory checks, the worker, the index, orchestration.
May import engine, manifest, executors and views; only worker.py (and stylize_one.py) may load torch at import."""
