"""What a run shows: live progress, plan/status/summary reports, result rows, contact sheets, the HTML gallery,
clips shown as strips.
Views read records and the index; they never import engine or executors (type hints aside) and never run jobs."""
