"""Training and benchmarking the face-deblurring networks that ``blurbeam deblur`` runs.

``crops``: the face crops and their seeded split; ``degrade``: synthetic degradations;
``train``: time-budgeted CPU training; ``benchmark``: the side-by-side benchmark against Wiener,
Richardson-Lucy and the original project's CNN (``baseline``); ``kernelfit``: the degradation behind a
blurry/clean pair; ``metrics``: PSNR and SSIM. TensorFlow is imported only by ``train`` and
``benchmark`` (through ``blurbeam.deblur.model``), never by ``degrade``.
"""
