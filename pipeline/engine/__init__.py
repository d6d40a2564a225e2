"""The pure core: VGG-19 features, losses, the objective, optimizers and the optimization loop.

Tensors in, tensors out: no files, no printing. May import only `pipeline.errors` and `pipeline.params`.
"""
