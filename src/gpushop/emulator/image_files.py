"""What an image brings into the sandbox's `app/` (the container's /app).

`ostris/aitoolkit` (any tag) works in /app/ai-toolkit: the emulator puts a simulated ai-toolkit
there (the `aitoolkit` package next to this file, copied as `toolkit/`, plus `run.py` and the
FLUX example config), so `cd /app/ai-toolkit && python run.py config.yaml` behaves like the real
trainer (docs/emulator.md, "The ai-toolkit image"). Other images bring nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gpushop.emulator import images

AITOOLKIT_REPOSITORY = "ostris/aitoolkit"
SIMULATOR = Path(__file__).with_name("aitoolkit")

RUN_PY = '''\
"""ai-toolkit entry point (simulated by the gpushop Vast.ai emulator: no GPU work happens)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from toolkit.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], os.path.dirname(os.path.abspath(__file__))))
'''

EXAMPLE_CONFIG = """\
---
job: extension
config:
  # this name will be the folder and filename name
  name: "my_first_flux_lora_v1"
  process:
    - type: 'sd_trainer'
      training_folder: "output"
      device: cuda:0
      # trigger_word: "p3r5on"
      network:
        type: "lora"
        linear: 16
        linear_alpha: 16
      save:
        dtype: float16
        save_every: 250
        max_step_saves_to_keep: 4
        push_to_hub: false
      datasets:
        - folder_path: "/path/to/images/folder"
          caption_ext: "txt"
          caption_dropout_rate: 0.05
          shuffle_tokens: false
          cache_latents_to_disk: true
          resolution: [ 512, 768, 1024 ]
      train:
        batch_size: 1
        steps: 2000
        gradient_accumulation_steps: 1
        train_unet: true
        train_text_encoder: false
        gradient_checkpointing: true
        noise_scheduler: "flowmatch"
        optimizer: "adamw8bit"
        lr: 1e-4
        ema_config:
          use_ema: true
          ema_decay: 0.99
        dtype: bf16
      model:
        name_or_path: "black-forest-labs/FLUX.1-dev"
        is_flux: true
        quantize: true
      sample:
        sampler: "flowmatch"
        sample_every: 250
        width: 1024
        height: 1024
        prompts:
          - "woman with red hair, playing chess at the park, bomb going off in the background"
          - "a woman holding a coffee cup, in a beanie, sitting at a cafe"
        neg: ""
        seed: 42
        walk_seed: true
        guidance_scale: 4
        sample_steps: 20
meta:
  name: "[name]"
  version: '1.0'
"""


def install(image: str, app_dir: Path) -> None:
    if images.repository(image) == AITOOLKIT_REPOSITORY:
        install_aitoolkit(app_dir / "ai-toolkit")


def install_aitoolkit(dest: Path) -> None:
    """Once per sandbox: a restarted instance keeps its files, as a container's disk does."""
    if (dest / "run.py").exists():
        return
    package = dest / "toolkit"
    package.mkdir(parents=True, exist_ok=True)
    for source in SIMULATOR.glob("*.py"):
        shutil.copyfile(source, package / source.name)
    examples = dest / "config" / "examples"
    examples.mkdir(parents=True, exist_ok=True)
    (examples / "train_lora_flux_24gb.yaml").write_text(EXAMPLE_CONFIG)
    (dest / "run.py").write_text(RUN_PY)  # last: its presence means "installed"
