"""Blind face deblurring as ``blurbeam deblur`` runs it: the restoration network and its packaged
weights (``model``), the kernel-estimating layers (``kernel``) and restoring the faces of an
image (``apply``). TensorFlow is imported only when a network is built. Training and benchmarks
are in ``blurbeam.lab.deblur``.
"""
