"""The Ray backend (``execution.backend: ray``): the expensive, independent jobs on a cluster.

Two kinds of job, each an idempotent write into the shared artifact cache:

* **experts** — one Ray task per missing expert (:func:`train_experts`). It receives
  the run config (as JSON), the task's name and training examples, the cache root and
  the placement decided for the cluster — never a loaded model — builds the base from
  ``base.model`` itself, trains through :func:`taskpgm.experts.ensure_experts` and
  returns the finished artifact's path. A job whose worker dies (a node lost, a process
  killed) is retried up to ``execution.max_retries`` times; the retry finds the expert's
  checkpoint in its work directory and resumes, ending with the same adapter.
* **scoring** — actors (:class:`Scorer`) that load the base model once and then score
  one model after another (the base, or an expert's adapter swapped in), each model's
  shard written into the signals' work directory under its own lock — the path
  ``taskpgm signals --only MODEL`` takes (:func:`score_models`).

The driver hands out the jobs, prints a progress line per finished job (count, rate,
ETA), and afterwards the stage functions of :mod:`taskpgm.pipeline` find every expert
and shard in the cache and only assemble them.

Before anything is submitted the cluster's resources are checked (:func:`connect`): a
job asking for more CPUs or GPUs than any live node has is a :class:`ConfigError`, not a
task pending forever. The device and precision are decided once, on a worker with the
jobs' resources (:func:`placements`), so the fingerprints the driver computes are those
of the artifacts the workers write.

The artifact cache must be on a filesystem every node sees. Its lock files and
temporary directories carry the writer's host, and a lock or leftover of another host
is never judged by a local process id (see :mod:`taskpgm.artifacts`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from taskpgm.config import ExecutionConfig, RunConfig
from taskpgm.errors import ConfigError, ModelError, TaskPGMError
from taskpgm.placement import Placement
from taskpgm.progress import Progress, say
from taskpgm.tasks.schema import Example

INSTALL = "pip install 'taskpgm[cluster]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ConfigError(f"execution.backend: ray needs Ray, which is not installed; "
                          f"{INSTALL} (or set execution.backend: local)") from err
    return ray


def connect(execution: ExecutionConfig, *, stream: TextIO | None = None) -> Any:
    """Join (or start) the Ray cluster of ``execution.address`` and check that a job of
    ``cpus_per_job`` CPUs and ``gpus_per_job`` GPUs fits on one of its live nodes.

    Returns the ``ray`` module.

    Raises:
        ConfigError: Ray missing, the cluster unreachable, or no node with the resources.
    """
    ray = _ray()
    if not ray.is_initialized():
        env = {k: os.environ[k] for k in ("TASKPGM_HOME", "TASKPGM_BIGBENCH") if k in os.environ}
        try:
            ray.init(address=execution.address, log_to_driver=False,
                     runtime_env={"env_vars": env} if env else None)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(
                f"execution.address: cannot join the Ray cluster at "
                f"{execution.address or 'a new local one'} ({err}); start it with "
                "`ray start --head` or fix the address") from err
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    cpus = max((r.get("CPU", 0.0) for r in nodes), default=0.0)
    gpus = max((r.get("GPU", 0.0) for r in nodes), default=0.0)
    where = f"the Ray cluster at {execution.address or 'this machine'}"
    if execution.gpus_per_job > gpus:
        raise ConfigError(
            f"execution.gpus_per_job: {execution.gpus_per_job:g}, but no node of {where} has "
            f"that many GPUs (the most on one node: {gpus:g}; {len(nodes)} node(s)); the jobs "
            "would wait forever — set gpus_per_job: 0 or add GPU nodes")
    if execution.cpus_per_job > cpus:
        raise ConfigError(
            f"execution.cpus_per_job: {execution.cpus_per_job:g}, but no node of {where} has "
            f"that many CPUs (the most on one node: {cpus:g}); lower cpus_per_job")
    say(f"cluster: Ray {ray.__version__}, {len(nodes)} node(s), "
        f"{sum(r.get('CPU', 0.0) for r in nodes):g} CPUs, "
        f"{sum(r.get('GPU', 0.0) for r in nodes):g} GPUs; jobs of "
        f"{execution.cpus_per_job:g} CPU, {execution.gpus_per_job:g} GPU", stream)
    return ray


def slots(ray: Any, execution: ExecutionConfig) -> int:
    """How many jobs of ``cpus_per_job`` CPUs and ``gpus_per_job`` GPUs the live nodes of
    the cluster ``ray`` is connected to (:func:`connect`) run at once."""
    total = 0
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        have = node.get("Resources", {})
        fit = int(have.get("CPU", 0.0) // execution.cpus_per_job)
        if execution.gpus_per_job > 0:
            fit = min(fit, int(have.get("GPU", 0.0) // execution.gpus_per_job))
        total += fit
    return total


def _options(execution: ExecutionConfig) -> dict[str, Any]:
    return {"num_cpus": execution.cpus_per_job, "num_gpus": execution.gpus_per_job}


def _threads(config: RunConfig) -> int:
    """A job's torch threads: base.threads, else its share of CPUs."""
    return config.base.threads or max(1, int(config.execution.cpus_per_job))


def _worker_config(config_json: str) -> RunConfig:
    config = RunConfig.model_validate_json(config_json)
    import torch

    torch.set_num_threads(_threads(config))
    return config


def _base_of(config: RunConfig) -> Any:
    from taskpgm.models import Base

    return Base.from_config(config.base, threads=_threads(config))


def _placements_job(config_json: str) -> dict[str, Placement]:
    from taskpgm.device import run_placements

    return run_placements(_worker_config(config_json), stream=sys.stderr)


def placements(config: RunConfig, *, stream: TextIO | None = None) -> dict[str, Placement]:
    """Each stage's device and precision as a worker with the jobs' resources decides
    them (:func:`taskpgm.device.run_placements` run there)."""
    ray = connect(config.execution, stream=stream)
    job = ray.remote(**_options(config.execution))(_placements_job)
    return dict(_get(ray, job.remote(config.model_dump_json()), "the placement probe"))


def _get(ray: Any, ref: Any, what: str = "a Ray job") -> Any:
    """``ray.get`` with the job's failure as a taskpgm error: its own taskpgm error as it
    is, anything else (an exception in the job, a worker dead beyond its retries) named
    with the job, never a Ray traceback."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as err:
        cause = getattr(err, "cause", None)
        if isinstance(cause, TaskPGMError):
            raise cause from None
        raise ModelError(f"{what} failed on the cluster: {type(cause).__name__}: {cause}; "
                         "finished work is kept — fix it and run the same command again"
                         ) from None
    except ray.exceptions.RayError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{what} was lost on the cluster after its retries ({first}); "
                         "finished work is kept — check the nodes (memory, disk), raise "
                         "execution.max_retries, and run the same command again") from None


def expert_job(config_json: str, task: str, examples: Sequence[Example], root: str | None,
               placement: Placement) -> str:
    """One expert, on a worker: train it (or resume it) into the cache; its path."""
    from taskpgm.experts import ensure_experts

    config = _worker_config(config_json)
    found = ensure_experts(_base_of(config), {task: examples}, config.experts,
                           root=Path(root) if root else None, stream=sys.stderr,
                           placement=placement)
    return str(found[task].path)


def train_experts(config: RunConfig, base: Any, train_sets: Mapping[str, Sequence[Example]],
                  placement: Placement, *, root: Path | None = None,
                  stream: TextIO | None = None) -> dict[str, str]:
    """Train every missing expert as a Ray task; returns {task: artifact path} of those
    trained now, once all are in the cache."""
    from taskpgm.experts import missing

    todo = missing(base, train_sets, config.experts, placement, root=root)
    if not todo:
        return {}
    ray = connect(config.execution, stream=stream)
    job = ray.remote(max_retries=config.execution.max_retries,
                     **_options(config.execution))(expert_job)
    cfg = ray.put(config.model_dump_json())
    refs = {job.remote(cfg, task, train_sets[task], str(root) if root else None,
                       placement): task for task in todo}
    say(f"experts: {len(todo)} submitted to Ray ({len(train_sets) - len(todo)} "
        "finished already)", stream)
    return _drain(ray, refs, Progress("experts (ray)", len(todo), unit="expert", every=0,
                                      stream=stream))


def _drain(ray: Any, refs: dict[Any, str], progress: Progress) -> dict[str, str]:
    """Wait for every job, one progress line per finished one; {name: result}."""
    out: dict[str, str] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            out[refs[ref]] = _get(ray, ref, f"expert {refs[ref]}")
            progress.update(1, note=f"{refs[ref]} done")
    return out


class Scorer:
    """A scoring actor: the base model loaded once, then one model after another scored
    into the signals' work directory (the base, or an expert's adapter swapped in)."""

    def __init__(self, config_json: str, placement: Placement) -> None:
        self.config = _worker_config(config_json)
        self.base = _base_of(self.config)
        self.placement = placement

    def score(self, key: str, experts: Mapping[str, Any], examples: Sequence[Example],
              work: str, root: str | None) -> str:
        from taskpgm.signals import score_shards

        t0 = time.monotonic()
        score_shards(self.base, experts, examples, self.config.signals, [key], Path(work),
                      sys.stderr, self.placement, Path(root) if root else None)
        return f"{time.monotonic() - t0:.1f}s"


def score_models(config: RunConfig, base: Any, experts: Mapping[str, Any],
                 probes: Mapping[str, Sequence[Example]], placement: Placement, *,
                 root: Path | None = None, stream: TextIO | None = None) -> int:
    """Score every model whose shard is missing on Ray scoring actors (as many as the
    cluster fits, at most one per model); returns how many models were scored."""
    from taskpgm import artifacts
    from taskpgm.readers import model_keys
    from taskpgm.signals import STAGE, plan_probe, unscored

    examples, _, _, _, fp = plan_probe(base, experts, probes, config.signals, placement, stream)
    if artifacts.find(STAGE, "probe", fp, root=root) is not None:
        return 0
    work = artifacts.work_dir(STAGE, "probe", fp, root=root)
    todo = unscored(work, model_keys(experts))
    if not todo:
        return 0
    ray = connect(config.execution, stream=stream)
    fits = slots(ray, config.execution)
    actor = ray.remote(max_restarts=config.execution.max_retries,
                       max_task_retries=config.execution.max_retries,
                       **_options(config.execution))(Scorer)
    pool = [actor.remote(config.model_dump_json(), placement)
            for _ in range(max(1, min(len(todo), fits)))]
    shared = (ray.put(dict(experts)), ray.put(list(examples)), str(work),
              str(root) if root else None)
    say(f"signals: {len(todo)} models to score on {len(pool)} Ray scoring actor(s)", stream)
    progress = Progress("signals (ray)", len(todo), unit="model", every=0, stream=stream)
    queue, running = list(todo), {}
    for a in pool:  # one model per actor at a time; the next goes to whichever is free
        key = queue.pop(0)
        running[a.score.remote(key, *shared)] = (key, a)
    while running:
        ready, _ = ray.wait(list(running), num_returns=1)
        key, a = running.pop(ready[0])
        took = _get(ray, ready[0], f"scoring {key}")
        progress.update(1, note=f"{key} scored in {took}")
        if queue:
            nxt = queue.pop(0)
            running[a.score.remote(nxt, *shared)] = (nxt, a)
    for a in pool:
        ray.kill(a)
    return len(todo)
