"""Search your own videos: `calm index` builds an index, `calm search` / `calm serve` query it.

build      scan a folder, encode new or changed files, store what scoring needs (`build_index`)
store      the index folder: manifest, memory-mapped arrays, thumbnails
shortlist  stage one: frame-mean vectors, fp16 matrix-vector product
searcher   stage two: the model's own fusion head on the shortlist; moment, confidence
moment     the matching time span from per-frame weights
calibration P(top result is right) from score, margin and z; fitted by `calm index --calibrate`
calibrate  the calibration split encoded and searched (calibrate.py)
server     the web page and JSON API (`calm serve`)
"""
