"""Dataset sources: VOC-layout folders, COCO instances files, a folder with a labels CSV.

Each module reads one format into the :class:`pipeline.sources.base.Source` interface;
``pipeline.dataset_index`` picks one by ``dataset.format``.
"""
