"""The multi-label ViT classifier: construction (timm or the demo hybrid), checkpoints, training."""
