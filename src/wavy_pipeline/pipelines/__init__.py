"""The project's pipelines (one package each)."""

from typing import Any

# default of a node's optional input that its pipeline does not wire: the ``heldout``
# pipeline's own copies of ``evaluate_retrieval`` and ``score_generated_images`` take no
# held-out metrics (None, by contrast, means "wired, but never saved yet")
UNWIRED: Any = object()
