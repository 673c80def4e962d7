"""Tokenizers: text <-> token ids, behind one small protocol.

Four kinds, all satisfying :class:`Tokenizer`:

* :class:`CharTokenizer` -- one id per character (the nanoGPT Shakespeare tokenizer); easiest to read.
* :class:`BPETokenizer` -- byte-level BPE trained here with HF ``tokenizers``; any string encodes.
* :class:`GPT2Tokenizer` -- adapter around a real (or GPT-2-format) HF tokenizer, for GPT-2 weights.
* :class:`HFTokenizer` -- any Hugging Face ``tokenizer.json`` (Llama 3, SmolLM2, Qwen ...), for those weights.

``token_strs`` gives *display* strings for people.  Conventions, the same for every kind:
a space is shown as a space and a newline as a real ``"\\n"`` character (byte-level BPE's ``Ġ``/``Ċ`` are
mapped back), so joining the strings gives the decoded text whenever every token is whole UTF-8; drawing
whitespace visibly is the viewer's job.  A byte-level token that holds only part of a UTF-8 character
shows those bytes as ``<0xE6>``-style pieces; special tokens show as themselves (``<|endoftext|>``).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# HF's package (an absolute import, so this module's own name does not shadow it).
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"  # transformers' file: the tokenizer's class and special tokens
ENDOFTEXT = "<|endoftext|>"


@runtime_checkable
class Tokenizer(Protocol):
    """What the model, generation and the app need from any tokenizer."""

    def encode(self, text: str) -> list[int]:
        """Text to token ids (no BOS/EOS added)."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids (a list, or a 1-D tensor) back to text; ``decode(encode(s)) == s``."""
        ...

    def token_strs(self, ids: Sequence[int]) -> list[str]:
        """One display string per id, for people (conventions in the module docstring)."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write the tokenizer's files into ``directory`` (created if needed); read back by load_tokenizer."""
        ...

    @property
    def vocab_size(self) -> int:
        """Number of ids; every id from encode is below it."""
        ...

    @property
    def start_id(self) -> int:
        """The id generation starts from when the prompt is empty."""
        ...


def _ids(ids: Sequence[int]) -> list[int]:
    # Accept lists, tuples, 1-D tensors and numpy arrays alike (int() unwraps 0-d tensors).
    return [int(i) for i in ids]


# ---------------------------------------------------------------------------------------------- characters


class CharTokenizer:
    """One token per character.  ``start_id`` is the id of ``"\\n"`` when present (a fresh line), else 0."""

    def __init__(self, chars: Iterable[str]):
        self.chars: list[str] = list(chars)
        if not self.chars:
            raise ValueError("CharTokenizer needs at least one character")
        if any(len(c) != 1 for c in self.chars) or len(set(self.chars)) != len(self.chars):
            raise ValueError("CharTokenizer chars must be distinct single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Build the vocabulary from the sorted set of characters in ``text`` (sorted so it is reproducible)."""
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def start_id(self) -> int:
        return self.stoi.get("\n", 0)

    def encode(self, text: str) -> list[int]:
        """Map each character to its id; raise ``ValueError`` naming every character not in the vocabulary."""
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = list(dict.fromkeys(c for c in text if c not in self.stoi))  # dedupe, keep order
            raise ValueError(
                f"characters not in this CharTokenizer's vocabulary: {', '.join(map(repr, unknown))}"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """Join the characters for ``ids``; an id outside the vocabulary raises ``ValueError``."""
        ids = _ids(ids)
        bad = [i for i in ids if not 0 <= i < len(self.chars)]
        if bad:
            raise ValueError(f"token ids out of range 0..{len(self.chars) - 1}: {bad[:10]}")
        return "".join(self.chars[i] for i in ids)

    def token_strs(self, ids: Sequence[int]) -> list[str]:
        """One display string per id: the character itself."""
        return list(self.decode(ids))

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` as ``{"type": "char", "chars": "..."}``."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        data = {"type": "char", "chars": "".join(self.chars)}
        (path / TOKENIZER_FILE).write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> CharTokenizer:
        """Read a directory written by :meth:`save`."""
        data = json.loads((Path(directory) / TOKENIZER_FILE).read_text(encoding="utf-8"))
        return cls(data["chars"])


# ---------------------------------------------------------------------------------------- byte-level BPE


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    # GPT-2's bytes_to_unicode, inverted: byte-level BPE stores each byte as a printable char
    # (printable bytes as themselves, the rest shifted to 256+, e.g. space -> "Ġ", newline -> "Ċ").
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _hex_bytes(err: UnicodeError) -> tuple[str, int]:
    # Codec error handler: show undecodable bytes (a partial UTF-8 char) as <0xE6> pieces.
    assert isinstance(err, UnicodeDecodeError)
    return "".join(f"<0x{b:02X}>" for b in err.object[err.start : err.end]), err.end


codecs.register_error("workbench.hexbytes", _hex_bytes)


class _ByteLevelBPE:
    """Shared behaviour of tokenizers backed by an HF ``tokenizers.Tokenizer`` with ByteLevel pieces."""

    def __init__(self, tk: _HFTokenizer):
        self._tk = tk
        self._shown: dict[int, str] = {}  # display strings made so far: generation shows dozens of ids per step

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    @property
    def start_id(self) -> int:
        i = self._tk.token_to_id(ENDOFTEXT)
        if i is None:
            raise ValueError(f"this tokenizer has no {ENDOFTEXT} token to start generation from")
        return i

    def encode(self, text: str) -> list[int]:
        """Text to ids.  Any string encodes; a literal ``<|endoftext|>`` becomes the special token (as in HF)."""
        # add_special_tokens=False: never add BOS/EOS behind the caller's back.
        return self._tk.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids to text, special tokens kept.  Invalid UTF-8 (a cut multi-byte char) decodes as U+FFFD."""
        # The raw decoder, not transformers' decode: no clean_up_tokenization_spaces, so round trips are exact.
        return self._tk.decode(_ids(ids), skip_special_tokens=False)

    def token_strs(self, ids: Sequence[int]) -> list[str]:
        """One display string per id (see the module docstring for the conventions)."""
        out = []
        for i in _ids(ids):
            s = self._shown.get(i)
            if s is None:
                s = self._shown[i] = self._display(i)
            out.append(s)
        return out

    def _display(self, i: int) -> str:
        tok = self._tk.id_to_token(i)
        if tok is None:
            raise ValueError(f"token id {i} out of range 0..{self.vocab_size - 1}")
        u2b = _unicode_to_byte()
        if i in self._tk.get_added_tokens_decoder() or any(ch not in u2b for ch in tok):
            return tok
        return bytes(u2b[ch] for ch in tok).decode("utf-8", errors="workbench.hexbytes")


class BPETokenizer(_ByteLevelBPE):
    """Byte-level BPE (GPT-2 style) trained with HF ``tokenizers``.  ``start_id`` is ``<|endoftext|>``."""

    @classmethod
    def train(
        cls,
        text_or_iterator: str | Iterable[str],
        vocab_size: int,
        special_tokens: Sequence[str] = (ENDOFTEXT,),
    ) -> BPETokenizer:
        """Train on a string or an iterator of strings.  ``vocab_size`` counts the 256 bytes and specials.

        The vocabulary may come out smaller than asked when the text has too few pairs to merge.
        """
        if vocab_size < 256 + len(special_tokens):
            raise ValueError(f"vocab_size must be at least {256 + len(special_tokens)} (256 bytes + specials)")
        tk = _HFTokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(special_tokens),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, so any input encodes
            show_progress=False,
        )
        texts = [text_or_iterator] if isinstance(text_or_iterator, str) else text_or_iterator
        tk.train_from_iterator(texts, trainer=trainer)
        return cls(tk)

    def save(self, directory: str | Path) -> None:
        """Write one ``tokenizer.json`` (HF tokenizers' native format)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self._tk.save(str(path / TOKENIZER_FILE))

    @classmethod
    def load(cls, directory: str | Path) -> BPETokenizer:
        """Read a directory written by :meth:`save`."""
        return cls(_HFTokenizer.from_file(str(Path(directory) / TOKENIZER_FILE)))


class GPT2Tokenizer(_ByteLevelBPE):
    """Adapter for an HF GPT-2 tokenizer (``transformers``).  ``start_id`` is ``<|endoftext|>`` (50256 in GPT-2)."""

    def __init__(self, hf_tokenizer: Any):
        # Use the fast backend for encode/decode (see _ByteLevelBPE); keep the wrapper for save_pretrained.
        super().__init__(hf_tokenizer.backend_tokenizer)
        self.hf = hf_tokenizer

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> GPT2Tokenizer:
        """Load from a local HF directory (tokenizer.json, or vocab.json + merges.txt) or a hub id like "gpt2".

        A hub id needs internet (or the HF cache); a local directory never touches the network.
        """
        if isinstance(name_or_path, Path) and not name_or_path.is_dir():
            raise FileNotFoundError(f"tokenizer directory not found: {name_or_path}")
        from transformers import GPT2Tokenizer as HFGPT2Tokenizer  # lazy: transformers is slow to import

        try:
            hf = HFGPT2Tokenizer.from_pretrained(str(name_or_path))
        except (OSError, ValueError) as err:
            raise FileNotFoundError(f"could not load a GPT-2 tokenizer from {str(name_or_path)!r}: {err}") from err
        # Offline, transformers may hand back an empty tokenizer for a hub id instead of failing.
        if len(hf) <= 1:
            raise FileNotFoundError(
                f"could not load a GPT-2 tokenizer from {str(name_or_path)!r} (offline, or not a tokenizer directory)"
            )
        return cls(hf)

    def save(self, directory: str | Path) -> None:
        """Write the HF files (``save_pretrained``)."""
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.hf.save_pretrained(str(directory))

    load = from_pretrained


class HFTokenizer(_ByteLevelBPE):
    """Adapter for the ``tokenizer.json`` of a Hugging Face model of any family (Llama 3, SmolLM2, Qwen ...), read
    by the ``tokenizers`` library exactly as the file says (transformers' per-family classes may rebuild parts of
    it). ``start_id`` is the BOS token that ``tokenizer_config.json`` names, else its EOS, else ``<|endoftext|>``.
    """

    def __init__(self, tk: _HFTokenizer, config: dict[str, Any] | None = None):
        super().__init__(tk)
        self.config = dict(config or {})

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path) -> HFTokenizer:
        """Load from a local directory holding ``tokenizer.json`` (and optionally ``tokenizer_config.json``), or a
        hub id such as ``"Qwen/Qwen2.5-0.5B"`` (needs internet or the HF cache)."""
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            from huggingface_hub import snapshot_download  # lazy: only hub ids need it

            try:
                path = Path(snapshot_download(str(name_or_path), allow_patterns=[TOKENIZER_FILE, HF_CONFIG_FILE]))
            except Exception as err:  # the hub client raises many kinds (offline, missing repo, HTTP)
                raise FileNotFoundError(f"could not load a tokenizer for {str(name_or_path)!r}: {err}") from err
        if not (path / TOKENIZER_FILE).is_file():
            raise FileNotFoundError(f"no {TOKENIZER_FILE} in {path}")
        config_file = path / HF_CONFIG_FILE
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        return cls(_HFTokenizer.from_file(str(path / TOKENIZER_FILE)), config)

    load = from_pretrained

    def _special_id(self, key: str) -> int | None:
        token = self.config.get(key)
        token = token.get("content") if isinstance(token, dict) else token  # older files store {"content": ...}
        return self._tk.token_to_id(token) if isinstance(token, str) else None

    @property
    def eos_id(self) -> int | None:
        """The end-of-sequence token's id, when ``tokenizer_config.json`` names one."""
        return self._special_id("eos_token")

    @property
    def start_id(self) -> int:
        for i in (self._special_id("bos_token"), self.eos_id, self._tk.token_to_id(ENDOFTEXT)):
            if i is not None:
                return i
        raise ValueError("this tokenizer names no BOS or EOS token, and has no <|endoftext|>, to start generation from")

    def save(self, directory: str | Path) -> None:
        """Write ``tokenizer.json`` and a ``tokenizer_config.json`` that transformers' ``AutoTokenizer`` reads as
        the generic fast tokenizer (the JSON file alone defines the tokenizer, whatever class it came with)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        self._tk.save(str(path / TOKENIZER_FILE))
        config = {**self.config, "tokenizer_class": "PreTrainedTokenizerFast"}
        (path / HF_CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def _hf_tokenizer_class(path: Path) -> str | None:
    """The ``tokenizer_class`` that ``tokenizer_config.json`` in ``path`` names, if any."""
    try:
        return json.loads((path / HF_CONFIG_FILE).read_text(encoding="utf-8")).get("tokenizer_class")
    except (OSError, ValueError, AttributeError):
        return None


def load_tokenizer(directory: str | Path) -> Tokenizer:
    """Load whichever tokenizer ``directory`` holds, detected from its files.

    ``tokenizer.json`` with a ``tokenizer_config.json`` naming a class other than GPT-2's -> :class:`HFTokenizer`;
    ``tokenizer_config.json``, or ``vocab.json`` + ``merges.txt`` -> :class:`GPT2Tokenizer` (HF files);
    else ``tokenizer.json`` of type "char" -> :class:`CharTokenizer`, with a BPE model -> :class:`BPETokenizer`.
    A missing directory raises ``FileNotFoundError``, anything else unrecognised ``ValueError``.
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    tok_file = path / TOKENIZER_FILE
    hf_class = _hf_tokenizer_class(path)
    if tok_file.is_file() and hf_class is not None and not hf_class.startswith("GPT2"):
        return HFTokenizer.from_pretrained(path)
    # HF checks first: an HF directory also has a tokenizer.json, but ours never has these files.
    hf_files = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if (path / "tokenizer_config.json").is_file() or hf_files:
        return GPT2Tokenizer.from_pretrained(path)
    if tok_file.is_file():
        try:
            data = json.loads(tok_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{tok_file} is not valid JSON: {e}") from None
        if isinstance(data, dict) and data.get("type") == "char":
            return CharTokenizer.load(path)
        if isinstance(data, dict) and isinstance(data.get("model"), dict) and data["model"].get("type") == "BPE":
            return BPETokenizer.load(path)
    raise ValueError(
        f"no recognised tokenizer in {path}: expected tokenizer.json (char or BPE), "
        "or HF files (tokenizer_config.json, or vocab.json + merges.txt)"
    )
