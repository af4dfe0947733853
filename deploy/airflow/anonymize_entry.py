"""``python anonymize_entry.py --input=... --output=... [Beam options]`` runs ``blurbeam
anonymize`` with those arguments. It is the py_file of the BeamRunPythonPipelineOperator in
blurbeam_nightly.py, which appends the pipeline options after the file; its exit code is the
command's (1 above --max-error-rate, 2 on bad arguments)."""

import sys

from blurbeam.pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main(["anonymize", *sys.argv[1:]]))
