"""wavy_pipeline: speak a description, get a picture.

A Kedro project reproducing "Wavy: Generating Images from Speech".
"""

__version__ = "0.1.0"
