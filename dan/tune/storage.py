"""The study's storage: SQLite in the run folder by default, any URL Optuna accepts, or
``journal:PATH`` for a journal file; and opening a study in it when several workers start at once.

Dead workers are found by Optuna's own heartbeat (SQL storages): a running trial records a
heartbeat every ``spec.heartbeat`` seconds (``Study.optimize`` runs the thread); the next worker
to start a trial fails those silent for ``spec.grace`` seconds and
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback` queues each again with the same
hyperparameters, at most ``spec.max_retry`` times. Optuna's journal storage has no heartbeat: a
trial whose worker died there stays RUNNING (use an SQL storage for workers that may die).
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import warnings

from dan.errors import UserError
from dan.tune.spec import TuneSpec

_SCHEMA_RETRIES = 8
# the default storage's files in a study's folder: SQLite's database and the journals it writes beside it
STUDY_FILES = ("study.db", "study.db-journal", "study.db-wal", "study.db-shm")


def make_storage(url: str | None, run_dir: str, spec: TuneSpec):
    """The storage at ``url`` (default: ``<run_dir>/study.db``) with the heartbeat of ``spec``."""
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    if not url:
        os.makedirs(run_dir, exist_ok=True)
        from dan.checkpoint import check_no_links

        for name in STUDY_FILES:  # SQLite wrote through a link in a given folder
            check_no_links(os.path.join(run_dir, name), run_dir)
        url = f"sqlite:///{os.path.abspath(os.path.join(run_dir, 'study.db'))}"
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        if not path.strip():
            raise UserError("--storage journal: needs a file path, e.g. journal:runs/tune/journal.log")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None

    def open_rdb():
        with warnings.catch_warnings():  # the heartbeat is an experimental feature of Optuna
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry)
            with _sqlite_schema_lock(url):
                return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=spec.heartbeat,
                                  grace_period=spec.grace, heartbeat_stale_trial_callback=retry)

    try:
        return retry_schema_race(open_rdb)
    except Exception as e:  # SQLAlchemy raises many kinds for bad URLs / unreachable servers
        raise UserError(f"cannot open the study storage {url} ({str(e).splitlines()[0][:150]}): "
                        f"check --storage") from e


def retry_schema_race(fn):
    """``fn()``, tried again when it lost a race with another worker creating the same tables or
    study. Workers started together on an empty database race to create Optuna's schema (the loser
    sees "table ... already exists") or the same study; the winner's is usable, so try again."""
    for attempt in range(_SCHEMA_RETRIES):
        try:
            return fn()
        except Exception as e:
            if not _schema_race(e) or attempt + 1 == _SCHEMA_RETRIES:
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)


def _schema_race(e: Exception) -> bool:
    text = str(e).lower()
    return any(k in text for k in ("already exists", "duplicate", "unique constraint", "database is locked"))


@contextlib.contextmanager
def _sqlite_schema_lock(url: str):
    """Serialize schema creation of a local SQLite file between workers on this machine (a lock
    file beside it). Servers (PostgreSQL, MySQL) rely on :func:`retry_schema_race`."""
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    if not path or path == ":memory:" or not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        yield
        return
    from dan.checkpoint import file_lock

    with file_lock(path + ".lock"):
        yield
