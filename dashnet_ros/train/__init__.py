"""Training the trackers (paper §3.1-3.3, §4): data samples (:mod:`.data`), the SNN loop
(:mod:`.snn`, eq. 1-4 with BPTT), the ANN loop (:mod:`.ann`, eq. 5-6 with the eq. 10-12
attention channel), and what they share (:mod:`.common`: checkpoints, resume, torchrun).

Run them with ``dashnet train snn|ann``; how the shipped weights were made is in
``dashnet_ros/train/README.md``.
"""
