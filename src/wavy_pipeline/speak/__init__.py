"""Speak and see: a person's recording, or their microphone, becomes a picture.

:mod:`~wavy_pipeline.speak.core` holds the loaded models and the one function a recording
goes through (used by the ``speak`` pipeline and the web page alike);
:mod:`~wavy_pipeline.speak.queue` the bounded request queue; :mod:`~wavy_pipeline.speak.app`
the local web page (FastAPI), started by ``python -m wavy_pipeline.speak`` / ``make serve``.
"""

from wavy_pipeline.speak.core import STAGES, Heard, Speaker, SpeakSettings, encode_png

__all__ = ["STAGES", "Heard", "SpeakSettings", "Speaker", "encode_png"]
