"""Project settings. See
https://docs.kedro.org/en/stable/configure/configuration_basics/#configuration
"""

from kedro.config import OmegaConfigLoader

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}

# Under `accelerate launch` (several processes): rank 0 writes the catalog, the others wait
# and load what it wrote; a no-op for a single process (see wavy_pipeline/hooks.py).
from wavy_pipeline.hooks import DistributedHooks  # noqa: E402

HOOKS = (DistributedHooks(),)

# Experiment tracking (kedro-mlflow, the `tracking` extra): kedro-mlflow opens one MLflow
# run per `kedro run` (conf/base/mlflow.yml) and logs parameters; TrackingHooks adds the
# training curves, metrics and reports (wavy_pipeline/tracking.py). Both are no-ops
# without the extra. mlflow.yml may read MLFLOW_TRACKING_URI (oc.env), conf/local/mlflow.yml
# may override single keys of it (soft merge), and under `accelerate launch` only the main
# process (RANK 0) tracks.
from omegaconf.resolvers import oc  # noqa: E402

from wavy_pipeline.models.device import rank  # noqa: E402
from wavy_pipeline.tracking import TrackingHooks  # noqa: E402

HOOKS = (*HOOKS, TrackingHooks())
CONFIG_LOADER_ARGS["custom_resolvers"] = {"oc.env": oc.env}
CONFIG_LOADER_ARGS["merge_strategy"] = {"mlflow": "soft"}
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",) if rank() else ()

# Provenance: `run_provenance` (the run, every dataset's version) for the nodes that write
# metrics (wavy_pipeline/provenance.py).
from wavy_pipeline.provenance_hooks import ProvenanceHooks  # noqa: E402

HOOKS = (*HOOKS, ProvenanceHooks())
