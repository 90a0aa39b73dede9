"""``foundation`` (demo only): train small stand-ins for the pretrained encoders.

Not part of the default DAG: the trained stand-ins are committed under ``data/06_models``;
``kedro run --pipelines foundation`` reproduces them as a new version.
"""

from wavy_pipeline.pipelines.foundation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
