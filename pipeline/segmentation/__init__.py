"""The segmentation network trained on the pseudo-masks: architecture, training, inference."""
