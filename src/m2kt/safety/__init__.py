"""The safety auditor: unsafe-concept descriptions the student's representations are checked
against (after ingestion here; concept screening by meaning is issue 6's work)."""

from m2kt.safety.descriptions import default_unsafe_descriptions

__all__ = ["default_unsafe_descriptions"]
