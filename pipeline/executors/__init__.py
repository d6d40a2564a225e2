"""Where jobs run: the executor contract (dispatch, attempts, retries, timeouts, Ctrl-C), local processes, Ray actors.
May import errors, imaging and run (jobs, grouping, cache, the worker); never manifest or views."""
