"""From seeds to pseudo-masks: dense CRF, confident labels, AffinityNet and the random walk."""
