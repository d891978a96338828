"""Ensembles and chains: several models combined per stem, steps run on earlier stems.

- :mod:`dsu.pipeline.ensemble`: the ensemble algorithms, streaming.
- :mod:`dsu.pipeline.stems`: one stem under the names different models give it.
- :mod:`dsu.pipeline.spec`: the typed pipeline spec (YAML/JSON), validated without torch.
- :mod:`dsu.pipeline.preset`: presets shipped as data, and a spec checked against the
  models directory.
- :mod:`dsu.pipeline.runner`: streaming execution on the engine.

:class:`dsu.Separator` runs pipelines (``Separator(pipeline=...)`` or
``Separator(models=[...], ensemble=...)``).
"""
