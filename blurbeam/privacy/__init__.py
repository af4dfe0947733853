"""The privacy audit: can an attacker still recognise an anonymized face?

Pure code (no Beam): SFace identity features (``recognizer``), attackers that try to undo the
anonymization (``attackers``), per-image evaluation (``evaluate``), scoring with 95% intervals
(``scoring``, ``stats``), the sweep over methods and strengths (``faceset``, ``sweep``) and the
report (``report``). The Beam pipeline is ``blurbeam.pipelines.privacy_audit``.
"""
