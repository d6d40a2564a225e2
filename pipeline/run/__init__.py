"""Running a manifest: jobs, grouping, the style-target cache, memory checks, the worker, records, the index,
orchestration. May import engine, manifest, executors and views; only the worker (worker.py with its targets.py and
footprint.py) and stylize_one.py may load torch at import."""
