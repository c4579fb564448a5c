"""The garbage collector during an extract or a push: the objects that exist when it starts sit out its full passes."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def old_objects_frozen() -> Iterator[None]:
    """Keep the objects that exist on entry (Dagster's, SQLAlchemy's, pydantic's: about 200k) out of the garbage
    collector's full passes until exit; objects made inside are collected as usual.

    Each full pass walks every tracked object, and stops every thread meanwhile, the senders included
    (``bench/RESULTS.md``, "garbage collection"). ``gc.freeze`` is process-wide: nothing is frozen or unfrozen when
    something else in the process froze objects already.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
