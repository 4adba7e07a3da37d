"""Layer 6: product data: sources, records, text, tokenizers, the hash split, drift measures, curation, the demo
catalog."""
