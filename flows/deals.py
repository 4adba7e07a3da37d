"""Prefect flow: one cycle of the deal-hunting agents (scan -> price -> pick -> remember -> notify).

Thin: the cycle is ``pricer.agents.planner.Planner.run_cycle``; this flow runs it as one task
(no retries: the memory's outbox already makes a re-run resend only what is unsent) and
publishes the surfaced opportunities as a Prefect table artifact. ``flows/deployments.py``
serves it on a cron schedule with a concurrency limit of one, so cycles never overlap.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact


@task(name="deals-cycle")
def planner_cycle(config: str) -> dict[str, Any]:
    from pricer.agents.planner import run_cycle

    return run_cycle(config).as_dict()


@task(name="publish-opportunities")
def publish(report: dict[str, Any]) -> None:
    rows = [
        {
            "title": opp["title"][:100],
            "price": opp["price"],
            "estimate": opp["estimate"],
            "discount": f"{opp['discount']:.0%}",
            "url": opp["url"],
        }
        for opp in report["opportunities"]
    ]
    summary = (
        f"{report['deals']} new deals, {report['priced']} priced, {report['new_opportunities']} new "
        f"opportunities, {report['delivery'].get('sent', 0)} notifications sent"
    )
    create_table_artifact(
        key="deal-opportunities", table=rows or [{"title": "(none this cycle)"}], description=summary
    )


@flow(name="deals", log_prints=True)
def deals_flow(config: str = "configs/agents.yaml") -> dict[str, Any]:
    """Run one planner cycle with the agents configured in ``config``; returns the cycle report."""
    report = planner_cycle(config)
    publish(report)
    return report


if __name__ == "__main__":
    deals_flow()
