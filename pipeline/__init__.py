"""vit-wsss library: datasets, models, relevance, CRF, affinity, random walk, metrics.

Pure, importable functions and modules. Nothing here reads params.yaml or argv.
"""
