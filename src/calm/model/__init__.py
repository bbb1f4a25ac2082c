"""The model side of CALM: maps tensors to embeddings, distributions, losses and scores."""
