"""Layer 5: the traditional price models: each kind a typed spec and the model it builds; features, embeddings,
nearest neighbours, the ensemble's arithmetic."""
