"""m2kt: move what one neural network knows into another of a different architecture."""

__version__ = "0.1.0"
