"""Detection quality on WIDER FACE: the official AP (``wider_ap``), blur recall and false
positives at the anonymizer's threshold (``blur_recall``) and precision-recall plots
(``pr_plots``). No Beam; the pipeline is ``blurbeam.lab.pipelines.evaluate_detection``."""
