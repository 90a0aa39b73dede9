"""The evaluation stage: scoring generated images, and the report a person opens."""
