"""Everything TensorFlow: the byte codec, the network, the generator, training, model files.

No Telegram and no SQL here; `bot/` passes text in and gets text back.
"""

from model.codec import PAD, SEP, VOCAB_SIZE, Turn, decode, encode_prompt, encode_turns
from model.generator import FALLBACK_REPLY, MAX_TEMPERATURE, Generator, Reply
from model.modelfile import ModelFile, ModelFileError, load, save
from model.network import ModelConfig, build_network
from model.pretrain import BASE_MODEL_PATH


def load_generator(path=None, **kwargs) -> Generator:
    """A warmed-up Generator for the model file at `path` (the shipped base model by default)."""
    return Generator(load(path or BASE_MODEL_PATH), **kwargs)


__all__ = [
    "BASE_MODEL_PATH",
    "FALLBACK_REPLY",
    "MAX_TEMPERATURE",
    "PAD",
    "SEP",
    "VOCAB_SIZE",
    "Generator",
    "ModelConfig",
    "ModelFile",
    "ModelFileError",
    "Reply",
    "Turn",
    "build_network",
    "decode",
    "encode_prompt",
    "encode_turns",
    "load",
    "load_generator",
    "save",
]
