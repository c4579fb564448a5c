"""Each AIQ account's push in a thread of its own, their results yielded in the step's thread as they come.

One step pushes every account of a window, so accounts send in parallel under their own limits and one account failing
stops none of the others (the step then fails, naming it).
"""

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import dagster as dg

from aiq_pipelines.defs.figures import add_partition_figures
from aiq_pipelines.defs.keys import AccountAssets
from aiq_pipelines.defs.resources import AiqResource, SyncDatabase
from aiq_pipelines.settings import AccountSettings
from aiq_pipelines.sync.accounts import StoreScope
from aiq_pipelines.sync.push import Pusher


class Daily(NamedTuple):
    """A daily push asset's result, and each partition's own figures to record before it (in the step's thread)."""

    result: dg.MaterializeResult
    partitions: dict[str, dict[str, Any]]


class AccountLog(logging.LoggerAdapter):
    """The run's log, each line naming the account it is about (accounts push at once, their lines interleave)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[{self.extra['account']}] {msg}", kwargs


class Account:
    """One account as the push steps see it: its assets, its stores, its resource."""

    def __init__(self, config: AccountSettings, assets: AccountAssets, scope: StoreScope, labelled: bool):
        self.config, self.assets, self.scope, self.labelled = config, assets, scope, labelled

    def resource(self, context: dg.AssetExecutionContext) -> AiqResource:
        return getattr(context.resources, self.assets.resource_key)

    def log(self, context: dg.AssetExecutionContext) -> Any:
        return AccountLog(context.log, {"account": self.config.name}) if self.labelled else context.log

    def pusher(self, context: dg.AssetExecutionContext, client: Any, aiq: AiqResource) -> Pusher:
        sync: SyncDatabase = context.resources.sync
        return Pusher(sync.store(), client, aiq.account, context.run.run_id, self.log(context), self.scope)


Work = Callable[[], Iterator[Any]]  # a push (Daily or MaterializeResult), or a dry run's report (AssetObservation)
_FINISHED = object()


class _Failed(NamedTuple):
    account: str
    error: Exception


def recorded(context: dg.AssetExecutionContext, item: Any) -> Any:
    """A push's result, once each partition's own figures are added (in the step's thread: see ``Daily``)."""
    if not isinstance(item, Daily):
        return item
    add_partition_figures(context, item.result.asset_key, item.partitions)
    return item.result


def each_account(context: dg.AssetExecutionContext, work: dict[str, Work]) -> Iterator[Any]:
    """Run each account's push in a thread of its own and yield their results as they come. A failed account fails
    the step once the others are done; with one account, it runs in the step's own thread."""
    if len(work) == 1:
        for item in next(iter(work.values()))():
            yield recorded(context, item)
        return
    results: queue.Queue[Any] = queue.Queue()

    def run(name: str, push: Work) -> None:
        try:
            for result in push():
                results.put(result)
        except Exception as exc:  # reported below, after the other accounts finish
            results.put(_Failed(name, exc))
        finally:
            results.put(_FINISHED)

    threads = [threading.Thread(target=run, args=item, name=f"aiq-push-{item[0]}", daemon=True) for item in work.items()]
    for thread in threads:
        thread.start()
    failures: list[_Failed] = []
    running = len(threads)
    while running:
        item = results.get()
        if item is _FINISHED:
            running -= 1
        elif isinstance(item, _Failed):
            failures.append(item)
            context.log.error(f"[{item.account}] the push to this AIQ account failed: "
                              f"{type(item.error).__name__}: {item.error}")
        else:
            yield recorded(context, item)
    for thread in threads:
        thread.join()
    if failures:
        names = ", ".join(failure.account for failure in failures)
        raise dg.Failure(f"the push failed for AIQ account(s) {names}; the other accounts' results are recorded. "
                         "Re-run the partition: what was delivered is not sent again.") from failures[0].error
