"""e1's reading of texts, loaded once for the test sets' checks by meaning."""

from __future__ import annotations

import pytest

from m2kt.models.load import load_model
from m2kt.safety.screen import ReadTexts
from m2kt.safety.sides import model_reader


@pytest.fixture(scope="session")
def e1_read() -> ReadTexts:
    view = load_model("e1")
    (layer,) = view.check_layers([-1])
    return model_reader(view, layer, view.pooling)
