"""Layer 4: MLflow runs (one store, configured once), the model registry and the promotion gate."""
