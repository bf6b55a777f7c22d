"""Operators that several models share: sparse RoIAlign, threaded batched NMS, the oneDNN fully connected layer,
the cache of weights derived from parameters, and convolution + norm folding. They import only torch, torchvision
and each other; the architectures in resdet.modeling are built from them."""
