"""Video sampling, benchmark loaders and the synthetic benchmark; knows nothing of the model."""
