"""Sweeps: Optuna studies over n x size x seed (x any config field).

* :mod:`sweeps.spec`: the YAML spec -> a validated :class:`~sweeps.spec.SweepSpec` -> grid cells;
* :mod:`sweeps.storage`: where a study lives (journal file, PostgreSQL, SQLite) and the sweep lock;
* :mod:`sweeps.runner`: queue every cell once, workers, heartbeats, stale-trial recovery;
* :mod:`sweeps.status`: the tables of ``sweep run`` and ``sweep status``;
* :mod:`sweeps.worker`: one worker process; :mod:`sweeps.cli`: the ``mtplab sweep`` subcommands.

The recipe for many workers and hosts is in ``sweeps/README.md``.

Example:
    >>> from sweeps.spec import load_spec, cells
    >>> [c.key for c in cells(load_spec("quickstart"))]
    ['n=1,size=1M,seed=0', 'n=2,size=1M,seed=0', 'n=4,size=1M,seed=0']
"""
