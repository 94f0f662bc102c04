"""The student side: a packet ingested into a frozen student, verified, kept or rolled back.

`ingest(view, packet, settings)` runs the pipeline (ingest/pipeline.py) and returns an
`Ingestion`; `load_ingested(directory)` reads a saved adapter back, whose `predict` and
`states` use it on new texts. `IngestSettings(adapter="blocks", blocks=BlockSettings(...))`
adds LoRA inside the student's blocks (ingest/blocks.py).
"""

from m2kt.ingest.blocks import BlockSettings
from m2kt.ingest.evaluate import Ingested, Prediction, load_ingested
from m2kt.ingest.pipeline import Ingestion, IngestSettings, ingest
from m2kt.ingest.verify import Gate

__all__ = [
    "BlockSettings",
    "Gate",
    "IngestSettings",
    "Ingested",
    "Ingestion",
    "Prediction",
    "ingest",
    "load_ingested",
]
