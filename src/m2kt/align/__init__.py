"""Closed-form maps between latent spaces (and, later, trainable Concept Alignment Layers)."""

from m2kt.align.procrustes import orthogonal_procrustes

__all__ = ["orthogonal_procrustes"]
