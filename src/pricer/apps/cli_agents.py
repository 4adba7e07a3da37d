"""The commands that serve the registered champions and run the deal agents: ``pricer deals``, ``ui``,
``serve``, ``mcp``, ``fit-ensemble``, ``vectorstore`` and ``specialist-serve`` (``pricer.apps.cli`` adds them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pricer.apps.cli_options import ParamsOption, console

commands = typer.Typer()

AgentsConfigOption = Annotated[Path, typer.Option("--config", help="The deal agents' configuration.")]


@commands.command()
def deals(config: AgentsConfigOption = Path("configs/agents.yaml")) -> None:
    """Run one deal-hunting cycle: scan the feeds, price the deals, surface and notify opportunities."""
    from pricer.agents.planner import run_cycle

    report = run_cycle(config)
    table = Table(title=f"deals cycle {report.cycle_id} ({report.seconds:.1f} s)")
    for column in ("discount", "price", "estimate", "title"):
        table.add_column(column, justify="right" if column != "title" else "left")
    for opp in report.opportunities:
        table.add_row(f"{opp['discount']:.0%}", f"${opp['price']:,.2f}", f"${opp['estimate']:,.2f}", opp["title"][:70])
    Console().print(table)
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.scan.get("skipped", {}).items())) or "none"
    Console().print(
        f"{report.deals} new deals ({skipped} skipped), {report.priced} priced by "
        f"{', '.join(report.agents) or 'no agent'}; {report.new_opportunities} new opportunities; "
        f"notifications: {report.delivery.get('sent', 0)} sent, {report.delivery.get('failed', 0)} failed"
        + (f" ({report.delivery['skipped_reason']})" if report.delivery.get("skipped_reason") else "")
    )
    planner = report.planner
    if planner.get("kind") == "autonomous":
        Console().print(f"planner: the LLM ({planner['model']}) in {planner['steps']} steps, "
                        f"${planner['cost_usd']:.4f}; {len(planner.get('refused', []))} tool calls refused")
    else:
        Console().print(f"planner: the rules ({planner.get('reason', 'no reason given')})")


@commands.command()
def ui(
    config: AgentsConfigOption = Path("configs/agents.yaml"),
    host: Annotated[Optional[str], typer.Option(help="Interface to listen on (default: ui.host).")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Port (default: ui.port).")] = None,  # noqa: UP045
) -> None:
    """Serve the deal agents' web UI: opportunities, live agent log, price box, vector store plot."""
    from pricer.apps.ui import launch

    launch(host, port, config)


@commands.command()
def serve(
    config: AgentsConfigOption = Path("configs/agents.yaml"),
    host: Annotated[Optional[str], typer.Option(help="Interface to listen on (default: service.host).")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Port (default: service.port).")] = None,  # noqa: UP045
) -> None:
    """Serve the REST API over the registered champions: POST /v1/price, GET /v1/deals, /readyz, /metrics, /docs."""
    from pricer.apps.service import serve as serve_api

    serve_api(config, host, port)


@commands.command()
def mcp(
    config: AgentsConfigOption = Path("configs/agents.yaml"),
    transport: Annotated[Optional[str], typer.Option(help="stdio or http (default: mcp.transport).")] = None,  # noqa: UP045
    host: Annotated[Optional[str], typer.Option(help="Interface of the HTTP transport (default: mcp.host).")] = None,  # noqa: UP045
    port: Annotated[Optional[int], typer.Option(help="Port of the HTTP transport (default: mcp.port).")] = None,  # noqa: UP045
) -> None:
    """Serve the MCP tools (price_product, similar_products, latest_deals, leaderboard) over stdio or HTTP."""
    from pricer.apps.mcp_server import run as run_mcp

    run_mcp(config, transport, host, port)


@commands.command("fit-ensemble")
def fit_ensemble_command(config: AgentsConfigOption = Path("configs/agents.yaml"),
                         params: ParamsOption = Path("params.yaml")) -> None:
    """Fit the ensemble's weights on the validation split, score it on test, register and gate pricer-ensemble."""
    from pricer.agents.config import load_agents_config
    from pricer.stages.ensemble import fit_ensemble
    from pricer.stages.params import load_params

    fit = fit_ensemble(load_agents_config(config).ensemble, wandb=load_params(params).tracking.wandb)
    weights = ", ".join(f"{name} {value:.3f}" for name, value in fit.weights.weights.items())
    outcome = fit.result.summary()
    Console().print(f"weights: {weights}; test MAE ${fit.test_metrics['mae']:,.2f}; "
                    f"{outcome['name']} v{outcome['version']}: {outcome['decision']}")


@commands.command()
def vectorstore(config: AgentsConfigOption = Path("configs/agents.yaml")) -> None:
    """Build or update the frontier agent's vector store from the training split (only new products embedded)."""
    from pricer.agents.config import load_agents_config
    from pricer.agents.vectorstore import sync_store

    report = sync_store(load_agents_config(config))
    Console().print(f"{report.added} products added, {report.already_present} already stored "
                    f"({'source unchanged' if report.skipped_unchanged else f'{report.source_rows} in the source'}) "
                    f"in {report.seconds:.1f} s")


@commands.command("specialist-serve")
def specialist_serve(
    model: Annotated[str, typer.Option(help="The registered specialist: name@alias, name/version or a models:/ URI.")]
    = "pricer-specialist@champion",
    host: Annotated[str, typer.Option(help="Interface the server listens on.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port of the OpenAI-compatible API.")] = 8000,
    served_name: Annotated[str, typer.Option(help="The name the adapter is served as (agents.specialist.model).")]
    = "pricer-specialist",
    adapter_dir: Annotated[Path, typer.Option(help="Where the adapter is downloaded, one folder per version.")]
    = Path(".cache/specialist-adapters"),
    print_only: Annotated[bool, typer.Option("--print-only", help="Print the command; do not run it.")] = False,
    extra: Annotated[Optional[list[str]], typer.Argument(help="More `vllm serve` options, after `--`.")] = None,  # noqa: UP045
) -> None:
    """Serve a registered specialist with vLLM: its base model with the LoRA adapter, over an OpenAI-compatible API."""
    import shutil
    import subprocess

    from pricer.serving.vllm import vllm_plan
    from pricer.tracking.runs import configure

    configure()
    plan = vllm_plan(model, adapter_dir, served_name=served_name, host=host, port=port, extra=extra or ())
    console.print(f"{plan.model_uri}: base model {plan.base_model}, adapter {plan.adapter_dir}")
    for note in plan.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}", highlight=False)
    print(plan.command, flush=True)
    if print_only:
        return
    executable = shutil.which("vllm")
    if executable is None:
        console.print("vllm is not installed here: run the command above where it is (a GPU machine with "
                      "`pip install vllm`), then point agents.specialist at it (kind: remote)")
        raise typer.Exit(1)
    raise typer.Exit(subprocess.run([executable, *plan.argv[1:]], check=False).returncode)


