"""What every stage stands on: typed configuration, bad-input errors, atomic files, per-image
stores, processes and devices, memory planning, progress bars and the shared training loop."""
