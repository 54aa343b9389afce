"""Sweeps: Optuna studies over n x size x seed (x any config field).

* :mod:`sweeps.spec`: the YAML spec -> a validated :class:`~sweeps.spec.SweepSpec` -> grid cells;
* :mod:`sweeps.storage`: where a study lives (journal file, PostgreSQL, SQLite) and the sweep lock
  (:mod:`sweeps.journal`: the journal file's lock and damage checks; :mod:`sweeps.storage_url`: URL helpers);
* :mod:`sweeps.study`: a study opened with its spec (refused if the spec changed), grid params, the sampler;
* :mod:`sweeps.protocol`: the exactly-once protocol: queue every cell once, claims, heartbeats, stale trials;
* :mod:`sweeps.trial`: one claimed trial trained in its run folder (resumed if it has one) and told;
* :mod:`sweeps.runner`: ``sweep run``: the workers, in this process or as processes, and their progress;
* :mod:`sweeps.status`: which cells are done, and the tables of ``sweep run`` and ``sweep status``;
* :mod:`sweeps.worker`: one worker process; :mod:`sweeps.cli`: the ``mtplab sweep`` subcommands.

The recipe for many workers and hosts is in ``sweeps/README.md``.

Example:
    >>> from sweeps.spec import load_spec, cells
    >>> [c.key for c in cells(load_spec("quickstart"))]
    ['n=1,size=1M,seed=0', 'n=2,size=1M,seed=0', 'n=4,size=1M,seed=0']
"""
