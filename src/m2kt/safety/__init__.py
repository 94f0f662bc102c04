"""The safety auditor: concepts screened by meaning (where their embeddings land against a
model's own representations of unsafe-concept descriptions) at export and at ingestion, and the
descriptions the post-ingestion safety probes are checked against."""

from m2kt.safety.descriptions import default_unsafe_descriptions
from m2kt.safety.sides import ExportAudit, audit_export, finish_export

__all__ = ["ExportAudit", "audit_export", "default_unsafe_descriptions", "finish_export"]
