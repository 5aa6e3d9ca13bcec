"""Dataset sources: VOC-layout folders, COCO instances files, a folder with a labels CSV.

Each module reads one format into the :class:`pipeline.sources.base.Source` interface
(VOC's reader is :mod:`pipeline.voc`); :func:`pipeline.indexing.open_source` picks one by
``dataset.format``.
"""
