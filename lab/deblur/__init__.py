"""Training and benchmarking the face-deblurring networks that ``blurbeam deblur`` runs.

``crops``: the face crops and their seeded split; ``degrade``: synthetic degradations;
``train``: time-budgeted CPU training; ``benchmark``: the side-by-side benchmark against Wiener,
Richardson-Lucy and the original project's CNN (``baseline``, which also counts a network's
multiply-accumulates); ``kernelfit``: the degradation behind a blurry/clean pair; ``metrics``:
PSNR and SSIM. TensorFlow is imported only when a network is built, never by ``degrade``, so
the degradation code and its tests stay cheap.
"""
