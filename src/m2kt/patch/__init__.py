"""Model patches: a logit-space adapter learned without labels on a weak model and carried to a
stronger one in closed form (TransMiter). `train_patch`, `transfer_patch_packet` and
`load_patched_model` are what `m2kt patch train | transfer | apply` call.
"""

from m2kt.patch.api import PatchedModel, load_patched_model, train_patch, transfer_patch_packet
from m2kt.patch.config import PatchConfig

__all__ = [
    "PatchConfig",
    "PatchedModel",
    "load_patched_model",
    "train_patch",
    "transfer_patch_packet",
]
