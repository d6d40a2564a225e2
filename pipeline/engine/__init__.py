"""The pure core, tensors in and out: VGG-19 (layers, weights, features), losses, objective, pixels, optimizers,
optimize, flow (clips). May import only errors, params and itself; layers.py and weights.py do not load torch when imported."""
