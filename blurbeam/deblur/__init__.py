"""Blind face deblurring: degradations, the small restoration network, training and evaluation.

TensorFlow is imported only by ``model``, ``train`` and ``evaluate`` (never by ``degrade``), so
the degradation code and its tests stay cheap.
"""
