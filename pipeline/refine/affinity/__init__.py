"""AffinityNet (Ahn & Kwak, CVPR 2018; docs/methods.md, "Affinity labels" and "AffinityNet and its loss").

Three modules, one per step, imported directly so that each stage runs only its own code:
``pairs`` (pair targets from confident labels), ``net`` (the network and its affinities) and
``train`` (the loss and the training loop). Everything lives on the feature grid (h, w) =
input size / backbone stride; label maps are uint8, 0 background, k class, 255 neutral.
"""
