"""Which agent prices for each configured member: a registry agent (the model loaded here), or for a
``remote`` specialist the model server that serves its adapter (``pricer.agents.remote``)."""

from __future__ import annotations

import logging
from typing import Any

from pricer.agents.config import RemoteSpecialistConfig
from pricer.agents.estimators import PriceAgent, RegistryAgent
from pricer.agents.remote import RemoteSpecialistAgent

log = logging.getLogger(__name__)

MEMBERS = ("specialist", "frontier", "regressor")


def build_agents(config: Any) -> list[PriceAgent]:
    """The agents ``configs/agents.yaml`` enables, following each member's current ``@champion``."""
    agents: list[PriceAgent] = []
    for name in MEMBERS:
        entry = getattr(config.agents, name)
        if entry is None:
            log.info("agent %s disabled: agents.%s is null in the config", name, name)
        elif isinstance(entry, RemoteSpecialistConfig):
            agents.append(RemoteSpecialistAgent(name, entry))
        else:
            agents.append(RegistryAgent(name, entry.model))
    return agents


def pinned_agent(config: Any, name: str, model_uri: str) -> PriceAgent:
    """The agent that prices with one pinned version (``models:/pricer-specialist/3``) of member ``name``."""
    entry = getattr(config.agents, name, None)
    if isinstance(entry, RemoteSpecialistConfig):
        return RemoteSpecialistAgent(name, entry, model_uri=model_uri)
    return RegistryAgent(name, model_uri=model_uri)
