"""Data: loaders over arrays, the MNIST-family readers and built-in generated data sets."""
