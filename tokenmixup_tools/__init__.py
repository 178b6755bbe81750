""" The library of the zoo's command-line tools (`train.py`, `validate.py`, `python -m hub.publish`)

What the tools share, so that no tool imports another:

- `checkpoints`: the training checkpoint, written (atomically, run arguments as plain data) and read
  back (also earlier checkpoints), and the model rebuilt from its recorded configuration;
- `datasets`: the embedded quickstart dataset (shipped in `data/`), the MNIST-format sets (`idx_datasets`) and
  timm's datasets, and the conversion of images to the model's channels;
- `runtime`: the default device and mixed-precision setup;
- `evaluation`: the one evaluation pass (loss, top-1, top-5);
- `files`: atomic file writing (temporary file, fsync, rename).
- `cli`: how the tools report user errors (`UsageError`, `run_tool`: one line on stderr, exit status 2),
  their logging, and the checks of model names and checkpoint files behind those errors.

The model zoo itself (`models`) and the method (`tokenmixup`) do not depend on this package.
"""
