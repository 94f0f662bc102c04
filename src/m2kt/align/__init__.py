"""Maps between latent spaces: closed-form solvers (orthogonal Procrustes, ridge toward the
identity) and trainable Concept Alignment Layers started from a closed-form fit."""

from m2kt.align.cal import CALConfig, CALKind, ConceptAlignmentLayer
from m2kt.align.procrustes import orthogonal_procrustes
from m2kt.align.ridge import ridge_to_identity

__all__ = [
    "CALConfig",
    "CALKind",
    "ConceptAlignmentLayer",
    "orthogonal_procrustes",
    "ridge_to_identity",
]
