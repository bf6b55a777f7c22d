"""Errors in a dataset's files: each names the file (and the entry in it) and says what to do."""
from ..errors import UserError


class DataError(UserError, ValueError):
    """A dataset's annotation or image files cannot be used as they are."""


class UnreadableImageError(DataError, OSError):
    """An image file is missing, empty, truncated or not an image OpenCV can decode."""


class DatasetNotRegisteredError(DataError, KeyError):
    """A dataset name (DATASETS.TRAIN / TEST) that is neither registered nor of a 'coco:' / 'voc:' form."""
