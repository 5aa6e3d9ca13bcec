"""Seeds: relevance maps of the classifier per present class (made by cams), and reading them back."""
