"""Saving and loading: our directories, HF directories, shipped names, and the errors for everything else."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from workbench import GPT, GPTConfig, load_model, save_checkpoint
from workbench.checkpoint import latest_checkpoint, load_checkpoint, load_weights
from workbench.hf import HFLoadError
from workbench.tokenizers import BPETokenizer, CharTokenizer, GPT2Tokenizer

TEXT = "To be, or not to be, that is the question.\n我 爱 吃 饭 🤖\n" * 20


def test_save_and_load_round_trip(tmp_path):
    tok = CharTokenizer.from_text(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    save_checkpoint(model, tok, tmp_path / "ckpt", step=7)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["step"] == 7
    assert not list((tmp_path / "ckpt").glob("*.tmp"))  # temporary files were renamed away
    loaded, loaded_tok = load_model(tmp_path / "ckpt", device="cpu")
    assert not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()  # still tied
    assert loaded_tok.encode("to be") == tok.encode("to be")


def test_bpe_checkpoint_round_trip(tmp_path):
    tok = BPETokenizer.train(TEXT, vocab_size=300)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8))
    save_checkpoint(model, tok, tmp_path)
    _, loaded_tok = load_checkpoint(tmp_path, device="cpu")
    assert loaded_tok.decode(loaded_tok.encode(TEXT)) == TEXT


def test_load_hf_directory_with_tokenizer(tmp_path):
    from transformers import GPT2TokenizerFast

    bpe = BPETokenizer.train(TEXT, vocab_size=300)
    hf_tok = GPT2TokenizerFast(tokenizer_object=bpe._tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=bpe.vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                    bos_token_id=0, eos_token_id=0)).eval()
    hf.save_pretrained(tmp_path)
    hf_tok.save_pretrained(tmp_path)
    model, tok = load_model(tmp_path, device="cpu")
    assert isinstance(tok, GPT2Tokenizer)
    ids = tok.encode("To be, or not")
    with torch.no_grad():
        assert (model(torch.tensor([ids])) - hf(torch.tensor([ids])).logits).abs().max() <= 1e-4


def test_hf_directory_without_tokenizer_loads_model_only(tmp_path):
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                    bos_token_id=0, eos_token_id=0))
    hf.save_pretrained(tmp_path)
    model, tok = load_model(tmp_path, device="cpu")
    assert tok is None and model.config.vocab_size == 50


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        load_model(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(HFLoadError, match="'bert' model; supported are"):
        load_model(tmp_path)


def test_unknown_hub_id_offline_is_one_clear_error():
    # conftest.py puts HF in offline mode, so this fails at once, naming the id and the way out.
    with pytest.raises(HFLoadError, match=r"(?s)'no-such-model-xyz' is not in the local Hugging Face cache.*shipped models"):
        load_model("no-such-model-xyz")


def test_weights_that_do_not_fit_the_model_are_refused_by_name(tmp_path):
    from safetensors.torch import load_file, save_file

    small = GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=8)
    save_checkpoint(GPT(small), None, tmp_path)
    with pytest.raises(ValueError, match=r"missing \['transformer\.h\.1\.attn"):
        load_weights(GPT(GPTConfig(**{**small.__dict__, "n_layer": 2})), tmp_path)
    with pytest.raises(ValueError, match=r"other shapes \['transformer\.wpe\.weight'\]"):
        load_weights(GPT(GPTConfig(**{**small.__dict__, "block_size": 16})), tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({**weights, "transformer.extra": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"unexpected \['transformer\.extra'\]"):
        load_checkpoint(tmp_path, device="cpu")


def test_a_run_directory_whose_latest_names_nothing_complete_is_one_clear_error(tmp_path):
    (tmp_path / "latest").write_text("ckpt-000004")  # the directory it names was never finished
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="names no complete checkpoint"):
        load_model(tmp_path)
