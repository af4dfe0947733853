"""The privacy audit: can an attacker still recognise an anonymized face?

Pure code (no Beam; the sweep hands its uncached work to a Beam pipeline,
``blurbeam.lab.transforms.reid_audit.run_sweep_pipeline``): SFace identity features
(``recognizer``), attackers that try to undo the anonymization (``attackers``), the identity
features of one image's faces before and after anonymization and each attacker, and the models
a worker holds for them (``face_features``), scoring (``scoring``) with 95% confidence
intervals (``intervals``), the audit's image pairs and auditing one (``image_pairs``), the
sweep over methods and strengths (``faceset``, ``sweep``) and the audit's output files
(``audit_report``). The Beam pipeline is ``blurbeam.lab.pipelines.privacy_audit``.
"""
