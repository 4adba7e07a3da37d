"""Layer 5: open language models: LoRA/QLoRA training, loading (base + adapter) and batched inference."""
