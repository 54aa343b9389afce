"""Optuna storage URLs: passwords hidden in messages, the PostgreSQL driver pinned.

Used by :mod:`sweeps.storage` (which the sweeps write studies through and analysis reads them through).

Example:
    >>> redact("postgresql://me:secret@db:5432/lab")
    'postgresql://me:***@db:5432/lab'
"""

from __future__ import annotations

import importlib.util
import re


def redact(url: str) -> str:
    """A storage URL with its password hidden, for messages and reports.

    Example:
        >>> redact("postgresql://u:pw@h:5432/d")
        'postgresql://u:***@h:5432/d'
    """
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(url))


def with_driver(url: str) -> str:
    """Pin a plain ``postgresql://`` (or ``postgres://``) URL to the installed driver.

    SQLAlchemy 2.1 reads a plain ``postgresql://`` as psycopg 3; this lab
    installs ``psycopg2-binary``. So, when only psycopg2 is importable, the URL
    becomes ``postgresql+psycopg2://`` (use the same URL with optuna-dashboard).

    Example:
        >>> with_driver("sqlite:///x.db"), with_driver("postgresql+psycopg://h/db")
        ('sqlite:///x.db', 'postgresql+psycopg://h/db')
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix) and importlib.util.find_spec("psycopg") is None \
                and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url
