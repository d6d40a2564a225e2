"""YAML manifest -> validated `Manifest` -> jobs: the YAML reader, the schema, input resolution, expansion.
May import errors, params, imaging (extensions, headers), run.jobs and views.sheets' sheet defaults; runs nothing."""
