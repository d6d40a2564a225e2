"""What a run shows: progress, reports, results records, contact sheets and the HTML gallery.

Views read records and the index; they never run jobs or import the engine.
"""
