r"""Where the independent jobs of a table run: this process, a local process pool, a dask cluster.

A table of :mod:`hdlora.harness.tables` is a list of independent jobs (one simulation at one
(point, seed, D), one theory point or sweep). :func:`open_executor` turns one setting into a
:class:`concurrent.futures.Executor` that runs them:

=========================  ==================================================================
setting                    executor
=========================  ==================================================================
``None``, ``""``,          :class:`InProcessExecutor`: each job runs when submitted, in this
``"inprocess"``            process (the default; what every committed table was computed with)
``"processes"``,           a :class:`~concurrent.futures.ProcessPoolExecutor` of N workers
``"processes:N"``          (default: one per core), started by ``spawn``, one thread each
``"dask-local"``,          a dask ``LocalCluster`` of N worker processes, one thread each
``"dask-local:N"``
``"dask://host:port"``     the dask.distributed scheduler at that address
                           (``Client(address).get_executor()``)
=========================  ==================================================================

Results do not depend on the executor: every job seeds its own random streams from its seed
(:mod:`hdlora.simulation`), so the same jobs give the same numbers wherever they run, and the
rows come back in the order of the jobs. A job that needs a GPU uses one when its worker has one
(the simulators' ``device`` defaults to CUDA when present, in float64). A job's warnings are
caught where it runs and raised again here, so a notebook shows them whatever the executor.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor

from hdlora.harness.checkpoints import JobStore

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class InProcessExecutor(Executor):
    """Runs each job at once, in the calling process (the default executor)."""

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        """Run ``fn`` at once, here; its result (or its error) in a finished future."""
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 -- handed to the caller by result()
            future.set_exception(err)
        return future


def _one_thread() -> None:
    """Worker initialiser: one BLAS/OpenMP thread per worker (the workers share the cores)."""
    os.environ.update({name: "1" for name in THREAD_VARIABLES})
    import torch

    torch.set_num_threads(1)


def _count(text: str, name: str) -> int | None:
    """The N of ``"<kind>:N"`` (None when absent), checked to be a positive integer."""
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name} must be '<kind>' or '<kind>:N' with N ≥ 1, got {text!r}")
    return int(text)


@contextlib.contextmanager
def open_executor(setting: str | Executor | None = None) -> Iterator[Executor]:
    """The executor named by ``setting`` (see the module docstring), shut down on exit; an
    :class:`~concurrent.futures.Executor` given as the setting is used as is, and left open."""
    if isinstance(setting, Executor):
        yield setting
        return
    setting = (setting or "inprocess").strip()
    kind, _, n = setting.partition(":")
    if kind == "inprocess" and not n:
        yield InProcessExecutor()
    elif kind == "processes":
        workers = _count(n, "executor")
        context = multiprocessing.get_context("spawn")  # no fork of a threaded torch
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
            yield pool
    elif kind == "dask-local":
        from distributed import Client, LocalCluster

        workers = _count(n, "executor") or os.cpu_count() or 1
        with (
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True) as cluster,
            Client(cluster) as client,
        ):
            yield client.get_executor()
    elif setting.startswith("dask://"):
        from distributed import Client

        with Client(setting.removeprefix("dask://")) as client:
            yield client.get_executor()
    else:
        raise ValueError(
            "executor must be None, 'inprocess', 'processes[:N]', 'dask-local[:N]' or "
            f"'dask://host:port', got executor={setting!r}"
        )


def executor_setting(value: str | Executor | None) -> str | Executor | None:
    """``value``, or when it is None or empty the environment's ``HDLORA_EXECUTOR`` (how
    ``make figures EXECUTOR=...`` reaches every notebook)."""
    if isinstance(value, Executor) or value:
        return value
    return os.environ.get("HDLORA_EXECUTOR") or None


def call_catching_warnings(fn: Callable, *args, **kwargs):
    """``(fn(*args, **kwargs), warnings)``: the result and the (category, message) of each
    warning the call raised, to be raised again by :func:`reraise` where the result is used."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn(*args, **kwargs)
    return out, [(w.category, str(w.message)) for w in caught]


def reraise(caught: list[tuple[type[Warning], str]]) -> None:
    """Raise again, here, the warnings a job caught where it ran."""
    for category, message in caught:
        warnings.warn(message, category, stacklevel=3)


def map_jobs(
    fn: Callable,
    jobs: list[tuple],
    executor: Executor,
    on_done: Callable[[], None] = lambda: None,
    store: JobStore | None = None,
) -> list:
    """``[fn(*job) for job in jobs]`` run by ``executor``, in the order of ``jobs``; each job's
    warnings are raised here, and the first failing job's error stops the map (the jobs not yet
    started are cancelled). ``on_done`` is called after each job (a progress bar). With a
    ``store`` (:class:`~hdlora.harness.checkpoints.JobStore`), a job it holds is not run again
    (its output and warnings come from the store), and each job is stored as it finishes, so
    that a map stopped half-way resumes where it stopped."""
    stored = [store.get(i) if store is not None else None for i in range(len(jobs))]
    futures = {}
    for i, job in enumerate(jobs):
        if stored[i] is None:
            futures[i] = executor.submit(call_catching_warnings, fn, *job)
            if store is not None and futures[i].done() and futures[i].exception() is None:
                stored[i] = futures[i].result()  # in-process: run at submit, kept at once
                store.put(i, stored[i])
    results = []
    try:
        for i in range(len(jobs)):
            if stored[i] is None:
                stored[i] = futures[i].result()
                if store is not None:  # here, in order: no write after the map returned
                    store.put(i, stored[i])
            out, caught = stored[i]
            reraise(caught)
            results.append(out)
            on_done()
    finally:
        for future in futures.values():
            future.cancel()
    return results
