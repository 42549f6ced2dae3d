"""A simulated ostris/ai-toolkit for the emulator's `ostris/aitoolkit` image.

Copied into an instance's sandbox as /app/ai-toolkit/toolkit/ (image_files.py) and run there by
`python run.py CONFIG` with the sandbox's `python`. It checks the job config as ai-toolkit does,
needs a Hugging Face token for gated models, runs out of GPU memory like the real one, spends
simulated time (divided by EMULATOR_SPEED) and writes real outputs: valid safetensors LoRAs,
pruned step checkpoints, optimizer.pt, sample JPEGs. Stdlib and pyyaml only, relative imports
only, nothing from gpushop: it must run from its copy.
"""
