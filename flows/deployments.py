"""Serve the scheduled deployments: the deal agents every N minutes and the retraining flow by cron.

    python -m flows.deployments                       # schedules from configs/agents.yaml
    python -m flows.deployments --config other.yaml
    python -m flows.deployments --gpu-pool gpu        # deploy the GPU stages to a work pool, then exit

Both schedules come from the ``schedule`` section of ``configs/agents.yaml``
(``deals_every_minutes``, ``retrain_cron``, ``timezone``). ``prefect.serve`` registers the
deployments with the Prefect API (``PREFECT_API_URL``) and runs each scheduled flow run in a
subprocess of this long-running process. Each deployment has a concurrency limit of one: a
cycle that outlasts its interval delays the next instead of racing it. The retraining flow is
imported by its ``module:function`` path only here, so the deal agents do not depend on it.

``--gpu-pool`` instead registers the GPU stages (fine-tuning) as deployments of a work pool, with
this checkout as their source: a ``prefect worker start --pool <name>`` on the GPU machine (where
the same checkout lives at the same path, or a shared one) runs them, while everything else keeps
running here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from pathlib import Path
from typing import Any
from uuid import UUID

from pricer.agents.config import AgentsConfig, load_agents_config

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
GPU_STAGES = {"finetune": "flows/finetune.py:finetune_flow"}


def load_flow(path: str) -> Any:
    """``"flows.retrain:retrain_flow"`` -> the flow object."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected module:function, got {path!r}")
    return getattr(importlib.import_module(module_name), attribute)


def build_deployments(config: AgentsConfig, config_path: str = "configs/agents.yaml") -> list[Any]:
    """The RunnerDeployments to serve (nothing is registered until they are served)."""
    from prefect.schedules import Cron

    from flows.deals import deals_flow

    schedule = config.schedule
    deployments = [
        deals_flow.to_deployment(
            name=f"deals-every-{schedule.deals_every_minutes}-min",
            schedules=[Cron(schedule.deals_cron, timezone=schedule.timezone)],
            parameters={"config": config_path},
            concurrency_limit=1,
            tags=["pricer", "agents"],
            description="One deal-hunting cycle: scan feeds, price, surface and notify opportunities.",
        )
    ]
    if schedule.retrain_cron:
        module_name = schedule.retrain_flow.partition(":")[0]
        try:
            retrain = load_flow(schedule.retrain_flow)
        except ModuleNotFoundError as error:
            if error.name != module_name:  # the module exists but something it imports is missing
                raise
            log.warning("retraining deployment not served: module %s does not exist yet", module_name)
        else:
            deployments.append(
                retrain.to_deployment(
                    name="retrain-scheduled",
                    schedules=[Cron(schedule.retrain_cron, timezone=schedule.timezone)],
                    parameters=dict(schedule.retrain_parameters),
                    concurrency_limit=1,
                    tags=["pricer", "retrain"],
                    description="Scheduled retraining; the promotion gate decides what the agents load.",
                )
            )
    return deployments


def deploy_gpu_stages(pool: str, parameters: dict[str, dict[str, Any]] | None = None,
                      source: Path = REPO) -> dict[str, UUID]:
    """Register each GPU stage as a deployment of work pool ``pool`` (which must exist); returns the ids."""
    from prefect import flow

    parameters = parameters or {}
    return {
        stage: flow.from_source(source=str(source), entrypoint=entrypoint).deploy(
            name=f"{stage}-{pool}", work_pool_name=pool, parameters={"root": str(source), **parameters.get(stage, {})},
            build=False, push=False, print_next_steps=False, tags=["pricer", "gpu"],
        )
        for stage, entrypoint in GPU_STAGES.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/agents.yaml")
    parser.add_argument("--gpu-pool", help="deploy the GPU stages to this work pool and exit")
    args = parser.parse_args(argv)
    if args.gpu_pool:
        try:
            deployed = deploy_gpu_stages(args.gpu_pool)
        except ValueError as error:  # Prefect's "Could not find work pool ...": say it, no traceback
            raise SystemExit(f"{error} (prefect work-pool create {args.gpu_pool} --type process)") from None
        for stage, deployment_id in deployed.items():
            print(f"{stage}: deployment {deployment_id} on work pool {args.gpu_pool}")
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll of the API otherwise
    from prefect import serve

    config = load_agents_config(args.config)
    deployments = build_deployments(config, args.config)
    log.info("serving %s", ", ".join(deployment.name for deployment in deployments))
    serve(*deployments, pause_on_shutdown=False)


if __name__ == "__main__":
    main()
