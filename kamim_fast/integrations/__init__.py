"""kamim_fast in existing trainers: Microsoft SimMIM, Hugging Face, timm, and a GPU data pipeline.

- :mod:`kamim_fast.integrations.simmim`: SimMIM's model class (``forward(x, mask) -> loss``) with the loss
  swapped for :func:`kamim_fast.weighted_mim_loss` (KAMIM's paper preset, or plain SimMIM).
- :mod:`kamim_fast.integrations.hf`: the same for ``ViTForMaskedImageModeling`` /
  ``SwinForMaskedImageModeling``.
- :mod:`kamim_fast.integrations.timm`: a SimMIM model from a timm ``VisionTransformer``.
- :mod:`kamim_fast.integrations.data`: kornia augmentation on the device and SimMIM's mask generator in
  torch, so the whole KAMIM input path runs on the GPU.
- :mod:`kamim_fast.integrations.amt_bank`: AMT's attention bank (one map per image in shared memory), its
  refresh over the dataset (DDP-sharded, placed by index) and the published refresh schedule.
- :mod:`kamim_fast.integrations.amt_data`: AMT's input path: a crop that records its box and flip in the workers,
  and the map cropped like the image (or as published) into patch weights in the training step.

The submodules import their third-party packages (timm, transformers, kornia) only when used.
"""
