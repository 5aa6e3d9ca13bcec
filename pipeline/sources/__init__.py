"""Where data comes from: the dataset formats (VOC layout, COCO instances, folder + CSV), the
built-in synthetic set, and building the index and ground-truth stores from a source (the
dataset and masks stages). Every other stage reads those stores (`pipeline/data`), not the sources."""
