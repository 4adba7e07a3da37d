"""Layer 5: frontier models behind OpenAI-compatible endpoints: config, client, cache and cost log, prompts,
API fine-tuning data and jobs."""
