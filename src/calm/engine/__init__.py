"""Where model, data and metrics meet: training and evaluation loops, checkpoints, reports."""
