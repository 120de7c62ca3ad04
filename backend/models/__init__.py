"""Networks in plain torch: ResNet backbones, EMOCA/DECA encoders and decoders, emotion networks, checkpoint loading.

Nothing here downloads weights: networks are built empty and filled from the user's own checkpoints
(:mod:`backend.models.loading`).
"""
