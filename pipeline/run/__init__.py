"""Running a manifest: jobs, grouping, the style-target cache, memory checks, the worker, clips (chains of frames)
and their flow cache, records, the index, orchestration. May import engine, manifest, executors and views; only the
worker (worker.py with its targets.py, footprint.py, clips.py and flow_cache.py) and stylize_one.py may load torch at
import."""
