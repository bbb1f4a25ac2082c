"""Search your own videos: `calm index` builds an index, `calm search` / `calm serve` query it.

build       scan a folder, encode new or changed files, store what scoring needs (`build_index`)
sharded     the same under torchrun: files dealt out to ranks, rank 0 writes one index
store       the index folder: manifest, memory-mapped arrays, thumbnails, the IVF shortlist
shortlist   stage one: frame-mean vectors, fp16 matrix-vector product or a faiss IVF
scoring     stage two: the checkpoint's own score (fusion head + score mode) on stored states
searcher    the two stages, moments, near-duplicates, filters, image / example-video queries
moment      the matching time span from the weights the head pools frames with
calibration P(top result is right) from score, margin and z; Platt or isotonic by ECE
calibrate   `calm index --calibrate`: the validation split encoded and searched
duplicates  folding copies into one result; the threshold measured on copies
filters     folder, glob, duration and modification-time filters
server      the web page and JSON API (`calm serve`)
"""
