"""``--setup_file`` for Beam: builds this project's sdist from the repository root.

Beam runs this file (``python setup.py sdist --dist-dir DIR``, or ``python -m build --sdist``) in
its own directory; it moves to the repository root so that setuptools packages the project exactly
as pyproject.toml describes it (the card's folders mapped to ``blurbeam.*``, the dependencies
pinned there). Workers then ``pip install`` that sdist, with its dependencies.

The sdist holds the default detector's model (package data). Workers install it with its core
dependencies only, not the TensorFlow extras: deploy/dataflow/run_setup_file.sh refuses the mtcnn
detector and the learned method.

    blurbeam anonymize ... --runner DataflowRunner --setup_file /path/to/repo/deploy/setup.py
"""

import os

from setuptools import setup

os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
setup()
