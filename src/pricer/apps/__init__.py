"""Layer 1, the top: what people and other programs call. The ``pricer`` CLI, the Gradio UI, the leaderboard."""
