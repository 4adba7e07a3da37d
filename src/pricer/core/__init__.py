"""Layer 7, the ground floor: what every other layer shares and nothing here imports from above.

``errors`` (the ``PricerError`` family), ``config`` (strict pydantic loading), ``files`` (digests,
atomic writes), ``schema`` (columns and splits), ``prompt`` (the prompt and the untrusted-data fence),
``parsing`` (the one amount parser and the one answer parser), ``metrics`` (the price metrics),
``retry`` (the one retry policy).
"""
