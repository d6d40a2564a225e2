"""Where jobs run: the executor contract (base), local worker processes, Ray actors.

May import engine and run (the worker); never manifest or views.
"""
