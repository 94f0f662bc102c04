"""The safety auditor: concepts screened by meaning (where their embeddings land against a
model's own representations of unsafe-concept descriptions) at export and at ingestion, and the
descriptions the post-ingestion safety probes are checked against."""

from m2kt.safety.descriptions import default_unsafe_descriptions
from m2kt.safety.sides import audit_export

__all__ = ["audit_export", "default_unsafe_descriptions"]
