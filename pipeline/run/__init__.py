"""Running jobs: job records, the style-target cache, memory checks, the worker, the results index and the
run orchestration (manifest -> jobs -> executor -> index -> views). May import engine, manifest, executors, views.
"""
