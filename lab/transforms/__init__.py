"""Beam transforms of the research pipelines: scoring detections against WIDER FACE
(``score_detections``) and the privacy audit's per-face re-identification (``reid_audit``)."""
