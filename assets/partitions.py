"""Partitions: models × workloads, chosen from the registries at load time.

Local runs (the default) take the embedded models, which need no network, and every other
registered model whose weights are already on this machine (a local folder or GGUF file,
an installed package, the Hugging Face cache); a cluster deployment takes every
registered model. `EEXIT_MODELS` / `EEXIT_WORKLOADS` (comma
separated ids, read by `eexit_core.settings`) override either choice.
"""

from __future__ import annotations

import dagster as dg

from eexit_core.models.checkpoints import weights_on_this_machine
from eexit_core.settings import Environment
from eexit_core.stages import registries
from eexit_core.stages.zoo import zoo_variants
from eexit_core.storage.workspace import Workspace


def _chosen(variable: str, chosen: tuple[str, ...] | None, known: list[str]) -> list[str] | None:
    if chosen is None:
        return None
    unknown = [x for x in chosen if x not in known]
    if unknown:
        raise ValueError(f"{variable} names unknown ids {unknown}; registered: {', '.join(known)}")
    return list(chosen)


def selected_model_ids(ws: Workspace, env: Environment | None = None) -> list[str]:
    env = env or Environment.read()
    models, _ = registries(ws)
    known = [m.model_id for m in models.models]
    chosen = _chosen("EEXIT_MODELS", env.models, known)
    if chosen is not None:
        return chosen
    if env.zoo is not None:  # the zoo's checkpoints (none before it has trained), and nothing else
        return [m.model_id for m in models.models if m.zoo is not None]
    registered = [m for m in models.models if m.zoo is None]
    if env.defaults.every_registered_model:
        return [m.model_id for m in registered]
    return [m.model_id for m in registered if m.embedded or weights_on_this_machine(m)]


def published_model_ids(ws: Workspace, env: Environment | None = None) -> list[str]:
    """The models the results store publishes: the selected ones and, in a zoo run that
    names no models, also those a plain run selects. Nothing is computed for these: the
    current partitions an earlier run left on the zoo's workloads are published beside the
    zoo, so RQ2 sees both populations (and a stale or missing one is left out as always)."""
    import dataclasses

    env = env or Environment.read()
    selected = selected_model_ids(ws, env)
    if env.zoo is None or env.models is not None:
        return selected
    return [*selected, *selected_model_ids(ws, dataclasses.replace(env, zoo=None))]


def skipped_model_ids(ws: Workspace, env: Environment | None = None) -> list[str]:
    """Registered models a run leaves out: a local run's models whose weights are not here."""
    models, _ = registries(ws)
    selected = set(selected_model_ids(ws, env))
    return [m.model_id for m in models.models if m.model_id not in selected and m.zoo is None]


def selected_workload_ids(ws: Workspace, env: Environment | None = None) -> list[str]:
    env = env or Environment.read()
    _, workloads = registries(ws)
    known = [w.workload_id for w in workloads.workloads]
    if env.workloads is None and env.zoo is not None:
        from eexit_core.settings import ZOO_WORKLOADS

        return [w for w in known if w in ZOO_WORKLOADS]
    return _chosen("EEXIT_WORKLOADS", env.workloads, known) or known


_WS = Workspace.default()
model_partitions = dg.StaticPartitionsDefinition(selected_model_ids(_WS))
workload_partitions = dg.StaticPartitionsDefinition(selected_workload_ids(_WS))
model_workload_partitions = dg.MultiPartitionsDefinition(
    {"model": model_partitions, "workload": workload_partitions}
)


def selected_graded_workload_ids(ws: Workspace) -> list[str]:
    """The selected workloads that have a grader: exit accuracy runs only on these."""
    _, workloads = registries(ws)
    return [w for w in selected_workload_ids(ws) if workloads.get(w).graded]


graded_workload_partitions = dg.StaticPartitionsDefinition(selected_graded_workload_ids(_WS))
model_graded_partitions = dg.MultiPartitionsDefinition(
    {"model": model_partitions, "workload": graded_workload_partitions}
)


def selected_decoded_workload_ids(ws: Workspace) -> list[str]:
    """The selected workloads a model decodes open-ended: self-speculation runs on these."""
    from eexit_core.stages.self_speculation import decoded_workload

    _, workloads = registries(ws)
    return [w for w in selected_workload_ids(ws) if decoded_workload(workloads.get(w))]


decoded_workload_partitions = dg.StaticPartitionsDefinition(selected_decoded_workload_ids(_WS))
model_decoded_partitions = dg.MultiPartitionsDefinition(
    {"model": model_partitions, "workload": decoded_workload_partitions}
)


def zoo_scale(env: Environment | None = None) -> str:
    """The zoo scale the zoo assets train: EEXIT_ZOO's, else the CPU default."""
    env = env or Environment.read()
    return env.zoo or "cpu"


# one partition per variant and seed the zoo trains (eexit_core/stages/zoo.py)
zoo_variant_partitions = dg.StaticPartitionsDefinition([v.model_id for v in zoo_variants(zoo_scale())])


def model_workload_key(model_id: str, workload_id: str) -> str:
    """The partition key string Dagster uses for a model × workload pair."""
    return str(dg.MultiPartitionKey({"model": model_id, "workload": workload_id}))


def upstream_by_dimension(**asset_by_dimension: str) -> list:
    """Deps on single-dimension assets from a model × workload asset, e.g.
    `upstream_by_dimension(model="model_checkpoints")`."""
    import warnings

    with warnings.catch_warnings():
        # the mapping is marked beta but is the documented way to depend on one dimension
        warnings.simplefilter("ignore", dg.BetaWarning)
        return [dg.AssetDep(asset, partition_mapping=dg.MultiToSingleDimensionPartitionMapping(dimension))
                for dimension, asset in asset_by_dimension.items()]
