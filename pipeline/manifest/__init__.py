"""YAML manifest -> validated `Manifest` -> jobs: the YAML reader, the schema, input resolution, expansion.
May import errors, params, imaging (extensions, headers), video (clip entries), run.jobs and views.sheets' sheet defaults; runs nothing."""
