"""How detectors are stored: ``detector.json`` (kind, parameters, fitted arrays as lists) and, for networks,
``weights.pt`` holding a plain state_dict that is loaded with ``weights_only`` (no code is ever unpickled)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CONFIG_FILE = "detector.json"
WEIGHTS_FILE = "weights.pt"


def write_config(directory: str | Path, config: dict) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    return directory


def read_config(directory: str | Path) -> dict:
    return json.loads((Path(directory) / CONFIG_FILE).read_text())


def save_weights(directory: str | Path, network: torch.nn.Module) -> None:
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    torch.save(state, Path(directory) / WEIGHTS_FILE)


def load_weights(network: torch.nn.Module, directory: str | Path, device: str = "cpu") -> torch.nn.Module:
    """Load ``weights.pt`` into ``network`` and put it on ``device`` in eval mode."""
    network.load_state_dict(torch.load(Path(directory) / WEIGHTS_FILE, map_location=device, weights_only=True))
    return network.to(device).eval()
