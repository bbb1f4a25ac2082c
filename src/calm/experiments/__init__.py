"""`calm experiment`: grids of fine-tuning runs on the synthetic benchmark with the shared recipe
(`recipe.yaml`), their mechanism numbers and their statistics. Sits above `engine`, beside `demo`."""
