"""The teacher side: a concept spec read through a teacher into a knowledge packet.

`extract_packet(view, spec, settings, progress, audit)` runs the pipeline (extract/pipeline.py);
pass `m2kt.safety.audit_export` as `audit` to screen concepts by meaning before export, as
`m2kt extract` and `m2kt.extract()` do.
"""

from m2kt.extract.pipeline import (
    METHODS,
    ExportAudit,
    Extraction,
    ExtractionSettings,
    extract_packet,
)
from m2kt.extract.worth import Worth

__all__ = ["METHODS", "ExportAudit", "Extraction", "ExtractionSettings", "Worth", "extract_packet"]
