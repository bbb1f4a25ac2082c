"""The toy CLIP the synthetic benchmark starts from: pretrained on the synthetic world's fresh
image-caption stream and cached (`pretrain.py`); its architectures are `calm.model.configs`."""
