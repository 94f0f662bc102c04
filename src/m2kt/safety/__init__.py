"""The safety auditor: concepts and reasoning traces screened by meaning (a harm probe learnt in
the screened model's own space) at export and at ingestion, which drop what it flags, and the
descriptions the post-ingestion safety checks compare against."""

from m2kt.safety.descriptions import default_unsafe_descriptions
from m2kt.safety.sides import ExportScreen, finish_export

__all__ = ["ExportScreen", "default_unsafe_descriptions", "finish_export"]
