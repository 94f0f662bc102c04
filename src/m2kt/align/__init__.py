"""Closed-form maps between latent spaces (and, later, trainable Concept Alignment Layers)."""

from m2kt.align.procrustes import orthogonal_procrustes
from m2kt.align.ridge import ridge_to_identity

__all__ = ["orthogonal_procrustes", "ridge_to_identity"]
