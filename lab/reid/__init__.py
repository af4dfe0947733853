"""The privacy audit: can an attacker still recognise an anonymized face?

Pure code (no Beam): SFace identity features (``recognizer``), attackers that try to undo the
anonymization (``attackers``), the identity features of one image's faces before and after
anonymization and each attacker (``face_features``), scoring (``scoring``) with 95% confidence
intervals (``intervals``), the audit's image pairs (``image_pairs``), the sweep over methods and
strengths (``faceset``, ``sweep``) and the audit's output files (``audit_report``). The Beam
pipeline is ``blurbeam.lab.pipelines.privacy_audit``.
"""
