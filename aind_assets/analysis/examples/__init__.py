"""The packaged analyses (importing this package registers them) and the example dispatch config.

* :mod:`.unit_quality` — ISI violations and firing rates from the NWB units table;
* :mod:`.behavior_performance` — performance from the NWB trials table;
* ``dispatch.yaml`` — the dispatch config used when ``AIND_ANALYSIS_DISPATCH_CONFIG`` is unset.
"""

from aind_assets.analysis.examples import behavior_performance, unit_quality

__all__ = ["behavior_performance", "unit_quality"]
