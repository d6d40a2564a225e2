"""nst-batch: batch neural style transfer on the original VGG-19."""
__version__ = "0.1.0"
