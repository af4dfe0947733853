"""The learned edge anonymizer: a small U-Net that blurs faces with no detector, run as a
full-integer TFLite model in overlapping tiles (``blurbeam anonymize --method learned``).

``infer`` runs the packaged int8 model over whole images; the network, its training and its
export are in ``blurbeam.lab.edge``. Measured in docs/BENCHMARKS.md and docs/PRIVACY.md
("Learned edge anonymizer").
"""

from __future__ import annotations

#: Why ``--method learned`` needs ``--allow-weak-anonymization`` (``BlurConfig.weakness``): the
#: privacy measurement of the packaged model (docs/PRIVACY.md, "Learned edge anonymizer").
LEARNED_WEAKNESS = (
    "the learned anonymizer failed the privacy audit and changes too few faces on WIDER FACE "
    '(docs/PRIVACY.md and docs/BENCHMARKS.md, "Learned edge anonymizer"); it runs no detector '
    "and faces it misses keep most of their detail"
)


def model_record(path: str | None = None) -> dict[str, str]:
    """The model the learned method runs, for run configs and audit records. Raises
    ``MissingExtra`` when no TFLite interpreter is installed to run it."""
    from pathlib import Path

    from blurbeam.edge.infer import default_model_path, model_sha256, require_interpreter

    require_interpreter()
    p = Path(path) if path else default_model_path()
    if not p.is_file():
        raise ValueError(f"the learned anonymizer's model is missing: {p}")
    return {"file": p.name, "sha256": model_sha256(str(p))}
