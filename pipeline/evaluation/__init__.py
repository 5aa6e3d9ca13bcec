"""Scores: textbook metrics, pseudo-label mIoU, and the two tests of explanation methods."""
