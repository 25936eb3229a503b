"""Cohorts: many cases on Dask distributed, and what a cohort looks like before and after.

- :mod:`.manifest` -- the cases, from a manifest CSV or found under a folder.
- :mod:`.measure` -- per-scan figures (``scan_signature``): tags, kernel class from tags and
  from pixels, noise sigma, NPS.
- :mod:`.case` -- one case of a batch on a worker: normalize, write, measure, record; resumable.
- :mod:`.characterize` -- one case of the "before" pass (headers and noise only).
- :mod:`.batch` -- one task per case on a LocalCluster or an existing Dask scheduler.
- :mod:`.worker_signals` -- the LocalCluster workers' preload: they ignore the terminal's SIGINT (the batch cancels).
- :mod:`.tables` -- ``batch.csv``, ``emphysema.csv``, ``radiomics.csv``.
- :mod:`.stats`, :mod:`.figures`, :mod:`.report` -- ``cohort.html``.
"""
