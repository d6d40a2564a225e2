"""nst-batch: batch neural style transfer on the original VGG-19 (docs/architecture.md: the data flow).
Packages engine, manifest, run, executors, views; beside them cli, errors, params, imaging and video."""
__version__ = "0.1.0"
