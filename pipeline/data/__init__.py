"""What the stages read: the dataset index and ground-truth stores, image files, label maps,
preprocessing and training-time augmentation."""
