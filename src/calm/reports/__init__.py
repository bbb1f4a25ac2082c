"""Tables and figures rendered from results that the engine already produced.

Everything here reads plain result dicts (metrics JSON, the run log's records) and writes
markdown or PNG; nothing here trains, encodes or scores. It sits above `engine` (which never
imports it) and below `demo` and `cli`.
"""
