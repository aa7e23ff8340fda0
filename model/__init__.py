"""The model: the byte codec, the network, the generator, scoring, training, model files.

No Telegram and no SQL here; `bot/` passes text in and gets text back. This package
and its light modules (codec, modelfile, store, run_result) import without
TensorFlow; the network, the generator, scoring and training import it:

    from model.generator import Generator     # TensorFlow
    from model.store import ModelStore        # NumPy only
"""

from model.codec import (
    FALLBACK_REPLY,
    MAX_PROMPT_BYTES,
    PAD,
    SEP,
    VOCAB_SIZE,
    Encoded,
    Turn,
    decode,
    encode_prompt,
    encode_turns,
)
from model.modelfile import (
    BASE_MODEL_PATH,
    MIX_KEY,
    ModelConfig,
    ModelFile,
    ModelFileError,
    load,
    save,
)

__all__ = [
    "BASE_MODEL_PATH",
    "FALLBACK_REPLY",
    "MAX_PROMPT_BYTES",
    "MIX_KEY",
    "PAD",
    "SEP",
    "VOCAB_SIZE",
    "Encoded",
    "ModelConfig",
    "ModelFile",
    "ModelFileError",
    "Turn",
    "decode",
    "encode_prompt",
    "encode_turns",
    "load",
    "save",
]
