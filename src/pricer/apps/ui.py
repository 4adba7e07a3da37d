"""The deal agents' web UI (Gradio): opportunities, live agent activity, cycles, a price box, the vector store.

- the opportunities the planner surfaced, from memory, with their notification status; a row opens its
  detail (``pricer.apps.ui_detail``): each agent's estimate, the training products cited, the link, and
  a "Re-send alert" button (a recorded re-send, delivered through the messenger);
- a live tail of the agents' log (a ``LogBuffer``), refreshed by a ``gr.Timer``;
- "Run a cycle now": one planner cycle, its log streamed while it runs (``pricer.apps.ui_cycle``);
- "price this product": a text -> each agent's estimate and the ensemble's;
- a 3-D PCA of the vector store's embeddings, coloured by category, titles and prices on hover
  (``pricer.apps.ui_plot``).

``build_app`` only builds the Blocks (tests pass their own planner, store and log buffer);
``launch`` builds from ``configs/agents.yaml`` and serves. Cycles also run elsewhere (the Prefect
deployment, ``pricer deals``); the table follows the memory whoever wrote it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from pricer.agents import logbuffer
from pricer.agents.config import AgentsConfig, load_agents_config
from pricer.apps import ui_detail
from pricer.apps.ui_cycle import stream_cycle
from pricer.apps.ui_plot import store_figure

log = logging.getLogger("pricer.agents.ui")

TABLE_COLUMNS = ["discount", "price", "estimate", "title", "notification", "found", "feed", "url"]


def _money(value: Any) -> str:
    try:
        return f"${float(value):,.2f}"
    except (TypeError, ValueError):
        return ""


def opportunities_frame(memory: Any, limit: int = 200) -> pd.DataFrame:
    frame = memory.opportunities(limit)
    if frame.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    return pd.DataFrame(
        {
            "discount": frame["discount"].map(lambda value: f"{value:.0%}"),
            "price": frame["price"].map(_money),
            "estimate": frame["estimate"].map(_money),
            "title": frame["title"].str.slice(0, 70),
            "notification": frame["notification"].fillna(""),
            "found": frame["created_at"],
            "feed": frame["feed"],
            "url": frame["url"],
        },
        columns=TABLE_COLUMNS,
    )


def price_answer(planner: Any, text: str) -> tuple[str, pd.DataFrame]:
    text = (text or "").strip()
    if not text:
        return "Type or paste a product description first.", pd.DataFrame(columns=["agent", "estimate"])
    try:
        result = planner.price(text)
    except Exception as error:  # the box reports it; the app keeps running
        log.exception("pricing from the UI failed")
        return f"Pricing failed: {type(error).__name__}: {error}", pd.DataFrame(columns=["agent", "estimate"])
    rows = [
        {"agent": name, "estimate": _money(value) or "no answer"} for name, value in result["agents"].items()
    ]
    rows.append({"agent": "ensemble", "estimate": _money(result["ensemble"]) or "no answer"})
    if result["ensemble"] is None:
        summary = "No agent could price it" + (
            f" (skipped: {', '.join(result['skipped'])})" if result["skipped"] else ""
        )
    else:
        summary = f"**Ensemble estimate: {_money(result['ensemble'])}**"
        if result["skipped"]:
            summary += f"  \nSkipped agents: {', '.join(result['skipped'])}"
    log.info("UI priced a product at %s", _money(result["ensemble"]) or "nothing")
    return summary, pd.DataFrame(rows, columns=["agent", "estimate"])


def build_app(
    config: AgentsConfig | None = None,
    *,
    planner: Any = None,
    store: Any = None,
    log_buffer: logbuffer.LogBuffer | None = None,
) -> gr.Blocks:
    """The Blocks app over a planner (its memory and agents), a product store and a log buffer."""
    config = config or load_agents_config()
    buffer = log_buffer or logbuffer.install(capacity=max(1000, config.ui.log_lines))
    if planner is None:
        from pricer.agents.planner import Planner

        planner = Planner(config)
    if store is None:
        from pricer.agents.vectorstore import configured_store

        vs = config.vectorstore
        store = configured_store(vs) if Path(vs.path).exists() else None
    ui = config.ui

    def table_now() -> pd.DataFrame:
        return opportunities_frame(planner.memory, ui.table_rows)

    def refresh() -> tuple[pd.DataFrame, str]:
        return table_now(), buffer.tail(ui.log_lines)

    def shown(detail: ui_detail.Detail) -> tuple[Any, ...]:
        return detail.key, detail.markdown, detail.agents, detail.citations, gr.update(interactive=bool(detail.key))

    def select(event: gr.SelectData) -> tuple[Any, ...]:
        key = ui_detail.key_of_row(event.row_value, TABLE_COLUMNS)
        return (*shown(ui_detail.detail_view(planner, store, key)), "")

    def resend(key: str | None, request: gr.Request) -> tuple[Any, ...]:
        host = getattr(getattr(request, "client", None), "host", None)
        result = ui_detail.resend(planner, key, f"ui@{host}" if host else "ui")
        return (*shown(ui_detail.detail_view(planner, store, key)), result, table_now())

    with gr.Blocks(title="Pricer deals", analytics_enabled=False) as app:
        gr.Markdown("# Pricer deal hunter\nOpportunities the agents surfaced (click one for its detail), what "
                    "they are doing, a cycle on demand, a price box and the catalog they price against.")
        with gr.Row():
            with gr.Column(scale=3):
                table = gr.Dataframe(value=table_now, label="Opportunities", elem_id="opportunities",
                                     interactive=False, wrap=True)
            with gr.Column(scale=2):
                logs = gr.Textbox(value=lambda: buffer.tail(ui.log_lines), label="Agent activity (live)", lines=14,
                                  max_lines=14, autoscroll=True, interactive=False, elem_id="agent-log")
        with gr.Row():
            with gr.Column(scale=1, min_width=200):
                cycle_button = gr.Button("Run a cycle now", variant="primary", elem_id="cycle-button")
                cycle_status = gr.Markdown(elem_id="cycle-status")
            with gr.Column(scale=4):
                cycle_log = gr.Textbox(label="This cycle's log", lines=8, max_lines=8, autoscroll=True,
                                       interactive=False, elem_id="cycle-log")
        selected = gr.State(None)
        with gr.Group():
            detail = gr.Markdown(ui_detail.EMPTY.markdown, elem_id="detail")
            with gr.Row():
                with gr.Column(scale=2):
                    detail_agents = gr.Dataframe(headers=ui_detail.AGENT_COLUMNS, label="Each agent's estimate",
                                                 interactive=False, elem_id="detail-agents")
                with gr.Column(scale=3):
                    detail_citations = gr.Dataframe(headers=ui_detail.CITATION_COLUMNS, wrap=True, interactive=False,
                                                    label="Citations: the nearest training products and their prices",
                                                    elem_id="detail-citations")
            with gr.Row():
                resend_button = gr.Button("Re-send alert", interactive=False, elem_id="resend-button", scale=0)
                resend_result = gr.Markdown(elem_id="resend-result")
        with gr.Row():
            with gr.Column():
                text = gr.Textbox(label="Price this product", lines=5, elem_id="price-input",
                                  placeholder="Title and description of a product")
                button = gr.Button("Price it", variant="primary", elem_id="price-button")
                answer = gr.Markdown(elem_id="price-answer")
                per_agent = gr.Dataframe(headers=["agent", "estimate"], label="Each agent", interactive=False,
                                         elem_id="price-agents")
            with gr.Column():
                gr.Plot(value=lambda: store_figure(store, ui.plot_max_points),
                        label="Vector store (3-D PCA of the embeddings)", elem_id="vector-plot")
        timer = gr.Timer(ui.refresh_s)
        timer.tick(refresh, outputs=[table, logs], show_progress="hidden")
        detail_outputs = [selected, detail, detail_agents, detail_citations, resend_button]
        table.select(select, outputs=[*detail_outputs, resend_result])
        resend_button.click(resend, inputs=selected, outputs=[*detail_outputs, resend_result, table],
                            concurrency_limit=1, concurrency_id="resend")
        cycle_button.click(lambda: (yield from stream_cycle(planner, buffer, ui.log_lines)),
                           outputs=[cycle_status, cycle_log], concurrency_limit=1, concurrency_id="cycle",
                           show_progress="hidden").then(table_now, outputs=table)
        button.click(lambda value: price_answer(planner, value), inputs=text, outputs=[answer, per_agent])
        text.submit(lambda value: price_answer(planner, value), inputs=text, outputs=[answer, per_agent])
    return app


def launch(
    host: str | None = None,
    port: int | None = None,
    config_path: str | Path = "configs/agents.yaml",
    **kwargs: Any,
) -> Any:
    """Build the app from the config file and serve it (blocking unless ``prevent_thread_lock=True``)."""
    config = load_agents_config(config_path)
    app = build_app(config)
    app.queue()
    return app.launch(
        server_name=host or config.ui.host, server_port=port if port is not None else config.ui.port, **kwargs
    )
