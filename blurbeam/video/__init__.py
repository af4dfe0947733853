"""Video anonymization (needs the ``video`` extra: PyAV). Pure code, no Beam.

- ``media``: probe, keyframe segment plan, decoding, H.264 segment encoding, join by stream copy
  with the audio copied bit-exact; ``VideoError`` is every failure, with a one-line reason.
- ``tracking``: add-only face tracks that cover frames where detection missed a face.
- ``process``: one video end to end (``anonymize_video``) and its per-segment steps
  (``process_segment``), which different workers can run.

Nothing here imports ``av`` at import time; ``media.load_av`` does, with a one-line error naming
the extra when it is missing.
"""
