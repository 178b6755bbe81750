""" Export and publish TokenMixup checkpoints to the Hugging Face Hub

`python -m hub.publish CHECKPOINT --repo-id ORG/NAME` turns a `train.py` checkpoint into a
timm-compatible Hub folder (`model.safetensors`, `config.json`, `README.md` model card) and pushes it;
`timm.create_model('hf-hub:ORG/NAME', pretrained=True)` (after `import models`) rebuilds the model.

A tool run from the repository root, like `train.py` and `validate.py`; not an installed package.
"""
