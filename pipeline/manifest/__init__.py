"""YAML manifest -> validated `Manifest` -> jobs: the schema, the YAML reader, input resolution, expansion.

May import errors, params, imaging (extensions, headers) and run.jobs; never runs anything.
"""
