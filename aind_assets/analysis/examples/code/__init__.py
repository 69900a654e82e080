"""The packaged analyses' code, standalone (no ``aind_assets`` import): imported by the platform
in process, or put on ``PYTHONPATH`` of the analyses' own environment (``requirements.txt``) when
``AIND_EXAMPLES_OUT_OF_PROCESS=1``."""
