"""Entry points of the research commands (``evaluate``, ``privacy-audit``, ``train-deblur``,
``evaluate-deblur``, ``train-edge``), run through ``blurbeam.pipelines.cli``."""
