"""Evaluation: encode a split once (sharded across processes), then pure metrics over the cache.

`retrieval` and `captioning` build on one encode-shard-gather helper (`sharded`); `checkpoint`
evaluates a saved model on any benchmark split; `ood` runs the in-domain / out-of-domain matrix.
"""
