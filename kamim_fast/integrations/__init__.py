"""kamim_fast in existing trainers: Microsoft SimMIM, Hugging Face, timm, and a GPU data pipeline.

- :mod:`kamim_fast.integrations.simmim`: SimMIM's model class (``forward(x, mask) -> loss``) with the loss
  swapped for :func:`kamim_fast.weighted_mim_loss` (KAMIM's paper preset, or plain SimMIM).
- :mod:`kamim_fast.integrations.hf`: the same for ``ViTForMaskedImageModeling`` /
  ``SwinForMaskedImageModeling``.
- :mod:`kamim_fast.integrations.timm`: a SimMIM model from a timm ``VisionTransformer``.
- :mod:`kamim_fast.integrations.data`: kornia augmentation on the device and SimMIM's mask generator in
  torch, so the whole KAMIM input path runs on the GPU.

The submodules import their third-party packages (timm, transformers, kornia) only when used.
"""
