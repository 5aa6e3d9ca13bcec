"""The HTML report: its params section and the pictures it draws."""
