"""The AIND analysis flow: DocDB data assets → dynamic partitions → dispatch → analyses.

Pure logic (no Dagster): ``models`` (dispatch config, AnalysisDispatchModel), ``queries``
(aggregation pipelines, paging, partition keys), ``files`` (file selection, tasks, parameters),
``discovery`` (pages → partitions, the partition map), ``dispatch`` (one partition's jobs),
``registry`` (user analyses), ``wrapper`` (one job: de-duplication, results, record),
``results`` (queries of results), ``config`` (settings), ``examples`` (the packaged analyses).

Dagster (thin): ``resources``, ``assets``, ``sensors``, ``defs`` (wired into
``aind_assets.definitions``); ``cli`` adds ``aind-assets partitions …`` and ``results``.
"""
