"""Anchor sets: task-agnostic texts that a teacher and a student both read, so that a map
between their spaces can be fitted without any task data (relative representations, latent
space translation). A packet names the set it drew from and carries the teacher's states."""

from m2kt.anchors.sets import SHIPPED_ANCHORS, AnchorSet, load_anchor_set

__all__ = ["SHIPPED_ANCHORS", "AnchorSet", "load_anchor_set"]
