"""``irecon evaluate``: score any folder of reconstructions against fastMRI targets.

``options`` (torch-free) says what to score; ``run`` reads the files, scores every volume with
fastMRI's conventions and groups the scores per acceleration and acquisition, with the protocol.
"""
