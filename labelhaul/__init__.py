"""labelhaul: Labelbox exports into versioned, training-ready datasets.

The library never imports Prefect; flows/ and tasks/ wrap it.
"""

__version__ = "0.1.0"
