"""Data: loaders over arrays, the MNIST-family readers and built-in generated data sets."""

from .idx import read_idx, write_idx
from .loader import DataLoader
from .mnist import MNIST, DatasetNotFoundError, FashionMNIST, ImageDataset, data_root
from .synthetic import SHAPES2D_CLASSES, SHAPES3D_CLASSES, shapes2d, shapes3d

__all__ = [
    "MNIST",
    "SHAPES2D_CLASSES",
    "SHAPES3D_CLASSES",
    "DataLoader",
    "DatasetNotFoundError",
    "FashionMNIST",
    "ImageDataset",
    "data_root",
    "read_idx",
    "shapes2d",
    "shapes3d",
    "write_idx",
]
