"""Layer 4: every MLflow pyfunc Pricer registers, with its one signature and its one environment."""
