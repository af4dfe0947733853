"""Training the learned edge anonymizer that ``blurbeam anonymize --method learned`` runs.

``network``: the thesis's teacher U-Net and the student (Keras); ``training_pairs``: images and
blurbeam's own default anonymization of them, cut into tiles; ``train``: CPU training;
``export``: TFLite fp32 / int8 and the teacher's fp16 weights. The product runs the exported
model with ``blurbeam.edge.infer``.
"""
