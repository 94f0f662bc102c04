"""The teacher side: a concept spec read through a teacher into a knowledge packet.

`extract_packet(view, spec, settings, progress, audit)` runs the pipeline (extract/pipeline.py);
pass a `m2kt.safety.ExportScreen` as `audit` to screen concepts by meaning before export, then
`m2kt.safety.finish_export` to screen the traces and drop what it flagged, as `m2kt extract` and
`m2kt.extract_packet()` do.
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
