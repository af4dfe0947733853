"""Research code, apart from the product: how well blurbeam detects, anonymizes and restores.

The product (``blurbeam`` outside this package, ``blurbeam.pipelines``, ``blurbeam.transforms``,
``blurbeam.schemas``) never imports it; only the CLI's command table names the lab's pipelines,
imported when one of their commands runs. tests/test_lab_apart.py checks both.

``detection``: WIDER FACE AP, blur recall and false positives (``blurbeam evaluate``).
``reid``: the privacy audit, re-identifying anonymized faces (``blurbeam privacy-audit``).
``deblur``: training and benchmarking the face-deblurring networks that ``blurbeam deblur`` runs.
``edge``: training and exporting the learned edge anonymizer that ``--method learned`` runs.
``pipelines``: the entry points of those commands; ``transforms``: their Beam transforms.
"""
